"""Placeholder: filled in by the inspection CLI work (issue 7)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    return None

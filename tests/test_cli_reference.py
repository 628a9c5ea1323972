"""The CLI's docs agree with the parser: the reference is generated from --help and
current, and the guide covers every command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from eventbus.cli.reference import _subcommands, render

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11),
    reason="argparse's help layout differs between Python versions; generated on 3.11",
)
def test_reference_is_generated_from_the_parser() -> None:
    assert (ROOT / "docs" / "cli-reference.md").read_text() == render(), (
        "docs/cli-reference.md is stale: python -m eventbus.cli.reference > docs/cli-reference.md"
    )


def test_the_guide_covers_every_command() -> None:
    from eventbus.cli.main import build_parser

    guide = (ROOT / "docs" / "cli.md").read_text()
    for name, parser in _subcommands(build_parser()).items():
        assert f"`eventbus {name}" in guide, f"docs/cli.md does not cover 'eventbus {name}'"
        for action in _subcommands(parser):
            assert action in guide, f"docs/cli.md does not cover 'eventbus {name} {action}'"

"""Write the CLI reference (docs/cli-reference.md) from the parser's own --help.

    python -m eventbus.cli.reference > docs/cli-reference.md

tests/test_cli_reference.py fails when the file and the parser disagree.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator

HEADER = """\
# `eventbus` command reference

Generated from the parser by `python -m eventbus.cli.reference > docs/cli-reference.md`
(a test checks it is current). The guide with examples is [cli.md](cli.md).
"""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for name, child in _subcommands(parser).items():
        yield from _walk(child, (*path, name))


def render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help at the terminal's width
    from eventbus.cli.main import build_parser

    parts = [HEADER]
    for path, parser in _walk(build_parser(), ("eventbus",)):
        parts.append(f"\n## `{' '.join(path)}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())

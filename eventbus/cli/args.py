"""The command line's vocabulary: value types (ids, durations, counts, ports) and the
shapes its commands are declared in (a command, a typed option, a switch)."""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from eventbus.errors import EventBusError
from eventbus.streamid import format_id, predecessor

T = TypeVar("T", int, float)

_ID = re.compile(r"^(\d+)(?:-(\d+))?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class UsageError(EventBusError):
    """A mistake in the command line or its values: one line on stderr, exit status 2."""


# -- declaring commands -----------------------------------------------------------------


def command(
    sub: Any,
    name: str,
    handler: Callable[..., Any] | None,
    parents: Sequence[argparse.ArgumentParser] = (),
    *,
    help: str | None = None,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand of `sub`; `handler` (an async function of the parsed arguments,
    returning the exit status) runs it. Its help is the handler's docstring unless given:
    the first paragraph the one-line help, the rest the description (argparse reflows
    both)."""
    if help is None:
        doc = inspect.cleandoc(getattr(handler, "__doc__", None) or "")
        help, _, rest = doc.partition("\n\n")
        description = rest or None
    parser: argparse.ArgumentParser = sub.add_parser(
        name, parents=list(parents), help=help, description=description
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def option(
    parser: Any,
    name: str,
    kind: Callable[[str], Any],
    default: Any,
    *,
    metavar: str,
    help: str,
) -> None:
    """An option taking a value of `kind` (a function raising ArgumentTypeError)."""
    parser.add_argument(name, type=kind, default=default, metavar=metavar, help=help)


def switch(parser: Any, name: str, help: str) -> None:
    """An option without a value: on when given."""
    parser.add_argument(name, action="store_true", help=help)


# -- value types ----------------------------------------------------------------------


def _number(text: str, kind: type[T], expected: str) -> T:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _not_negative(value: T, text: str) -> T:
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def seconds(text: str) -> float:
    """A number of seconds, not negative."""
    return _not_negative(_number(text, float, "a number of seconds"), text)


def port(text: str) -> int:
    value = _number(text, int, "a port number")
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {text!r}")
    return value


def non_negative(text: str) -> int:
    return _not_negative(_number(text, int, "a whole number"), text)


def positive(text: str) -> int:
    value = non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def stream_id(text: str) -> str:
    """An entry id: ``<ms>-<seq>`` or ``<ms>`` (``-0`` is added)."""
    match = _ID.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a stream id: expected <milliseconds>-<sequence>, e.g. 1700000000000-0"
        )
    return f"{match[1]}-{match[2] or 0}"


def duration(text: str) -> float:
    """Seconds from ``500ms``, ``30s``, ``5m``, ``2h``, ``7d`` or a plain number."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use e.g. 500ms, 30s, 5m, 2h, 7d"
        )
    return float(match[1]) * _UNITS[match[2]]


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (UTC unless it says otherwise)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a stream id nor a time: use 1700000000000-0 or an ISO "
            "8601 time such as 2026-11-28T09:30:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _time_ms(text: str) -> int:
    ms = int(parse_time(text).timestamp() * 1000)
    if ms < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is before 1970: stream ids start at 1970-01-01T00:00:00Z"
        )
    return ms


def id_or_time(text: str) -> str:
    """A stream id, or a time turned into the first id at that millisecond."""
    if _ID.match(text.strip()):
        return stream_id(text)
    return f"{_time_ms(text)}-0"


def position(text: str) -> str:
    """A group position: ``beginning``, ``end``, an id (entries after it come next), or a
    time (entries from that time on come next: the id just before it)."""
    if text in ("beginning", "end"):
        return text
    if _ID.match(text.strip()):
        return stream_id(text)
    return format_id(predecessor((_time_ms(text), 0)))

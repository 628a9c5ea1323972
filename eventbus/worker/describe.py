"""Bounded one-line text for the worker's log lines and dead letters: a failure, a value
quoted from an entry."""

from __future__ import annotations

from eventbus.errors import describe_error

MAX_ERROR_CHARS = 2000  # of an error message kept in a dead letter
MAX_NAME_CHARS = 200  # of a value from an entry (a type, a key) quoted in a message


def clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text`, cut to `limit` characters with a note of how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def clip_repr(value: object, limit: int = MAX_NAME_CHARS) -> str:
    """repr(value) (control characters escaped), cut to about `limit` characters."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    return repr(value)


def describe(exc: BaseException, timeout_s: float | None = None) -> str:
    """A one-line description of a failure, bounded; never raises (an exception's
    __str__ may). A handler's timeout (`timeout_s`) is named as such."""
    text = describe_error(exc)
    if isinstance(exc, TimeoutError) and timeout_s is not None and text == type(exc).__name__:
        return f"handler exceeded its timeout of {timeout_s:g}s"
    return clip(text)

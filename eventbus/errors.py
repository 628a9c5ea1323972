"""The error tree: everything the package raises derives from `EventBusError`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Self


@dataclass(frozen=True, slots=True)
class Param:
    """A name of the API that an error's message gives as the fix (an argument, as in the
    signature: ``"claim_to"``; or a function): `text` the words the message uses for it,
    `value` the one to give, if the fix is a value. A front end puts its own name in
    their place (the CLI: its flag), through `EventBusError.render`."""

    name: str
    text: str
    value: str | None = None

    def __str__(self) -> str:
        return self.text


class EventBusError(Exception):
    """Root of every error eventbus raises."""

    # the message in parts, when it names arguments of the API (`naming`)
    parts: tuple[str | Param, ...] = ()

    @classmethod
    def naming(cls, *parts: str | Param) -> Self:
        """The error with the message `parts` joined, each Param in its API words."""
        error = cls("".join(map(str, parts)))
        error.parts = parts
        return error

    def render(self, spell: Callable[[Param], str | None]) -> str:
        """The message with each Param it names spelled by `spell` (None: as it is)."""
        if not self.parts:
            return describe_error(self)
        return "".join(p if isinstance(p, str) else spell(p) or p.text for p in self.parts)


class ConfigurationError(EventBusError, ValueError):
    """A handler, event type, option or URL is wrong; raised when it is declared."""


class PublishError(EventBusError):
    """An event could not be written to Redis."""


class EventTypeError(PublishError, TypeError):
    """The object given to publish is not a publishable `Event`."""


class ConnectionFailed(EventBusError, ConnectionError):
    """Redis could not be reached (wraps the redis-py error). ``url``: the server's URL,
    password redacted, when the raiser knows it (a CLI names its flag from it)."""

    url: str | None = None  # (also when a subclass's __init__ chain skips ours)

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class PermissionDenied(ConfigurationError):
    """The Redis user lacks an ACL permission the bus needs (a NOPERM reply): a
    configuration mistake, not an outage. The message names what is missing."""


class DecodeError(EventBusError):
    """A stream entry could not be decoded into an event."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EmbeddedServerError(EventBusError):
    """The embedded Redis server could not be found or started."""


class CommandFailed(EventBusError):
    """Redis answered a command with an error other than a missing permission or an
    outage (MOVED from a cluster node, WRONGTYPE, OOM...); the redis-py error is the cause."""


class EventTooLarge(PublishError, ValueError):
    """An event's encoded payload exceeds the bus's `max_event_bytes`; nothing was written."""


class BufferFull(PublishError):
    """`publish_nowait` found the buffer full under the `raise` (or `block`) overflow policy."""


class PublishManyError(PublishError):
    """Some events of a `publish_many` were not written, or their outcome is unknown.

    ``results[i]`` is the stream id of event ``i`` when it was written, else None.
    ``failed`` maps the index of each event Redis refused to the error (not written);
    ``unknown`` lists the indexes whose reply was lost with the connection (they may or
    may not have been written: publish them again with a key to be safe).
    """

    def __init__(
        self,
        message: str,
        *,
        results: list[str | None],
        failed: dict[int, Exception],
        unknown: list[int],
    ) -> None:
        super().__init__(message)
        self.results = results
        self.failed = failed
        self.unknown = unknown

    @property
    def written(self) -> list[int]:
        return [i for i, r in enumerate(self.results) if r is not None]


def describe_error(exc: BaseException) -> str:
    """What went wrong, for a log line or a message: ``str(exc)``, or the exception's type
    name when that is empty (an exception is always truthy, so ``exc or ...`` would not
    do). Never raises, whatever the exception's ``__str__`` does."""
    try:
        text = str(exc).strip()
    except Exception:
        text = ""
    return text or type(exc).__name__

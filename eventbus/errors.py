"""The error tree: everything the package raises derives from `EventBusError`."""

from __future__ import annotations


class EventBusError(Exception):
    """Root of every error eventbus raises."""


class ConfigurationError(EventBusError, ValueError):
    """A handler, event type, option or URL is wrong; raised when it is declared."""


class PublishError(EventBusError):
    """An event could not be written to Redis."""


class EventTypeError(PublishError, TypeError):
    """The object given to publish is not a publishable `Event`."""


class ConnectionFailed(EventBusError, ConnectionError):
    """Redis could not be reached (wraps the redis-py error)."""


class DecodeError(EventBusError):
    """A stream entry could not be decoded into an event."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EmbeddedServerError(EventBusError):
    """The embedded Redis server could not be found or started."""

"""Every Redis key name eventbus uses is built here.

All keys of one stream share the hash tag ``{<stream>}`` so that every Lua
script touching a stream, its dead letters and its markers runs in one cluster
slot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from eventbus.errors import ConfigurationError

DEFAULT_PREFIX = "eb"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def check_name(kind: str, value: str) -> str:
    """Stream, prefix and group names: letters, digits, ``_ . -`` (no braces, colons, spaces)."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"invalid {kind} name {value!r}: use letters, digits, '_', '.' or '-' "
            "(braces, colons and spaces are reserved for key structure)"
        )
    return value


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_name("prefix", self.prefix)

    def stream(self, stream: str) -> str:
        return f"{self.prefix}:{{{stream}}}"

    def dlq(self, stream: str) -> str:
        return f"{self.prefix}:{{{stream}}}:dlq"

    def idem(self, stream: str, group: str, key: str) -> str:
        return f"{self.prefix}:{{{stream}}}:idem:{group}:{key}"

    def pub(self, stream: str, key: str) -> str:
        return f"{self.prefix}:{{{stream}}}:pub:{key}"

    def schedule(self, name: str) -> str:
        return f"{self.prefix}:sched:{name}"

    def schedule_index(self) -> str:
        """A sorted set: schedule name -> when a scheduler last ran it (Unix time)."""
        return f"{self.prefix}:schedules"

    def stream_pattern(self) -> str:
        """A SCAN pattern matching every stream key (and, filtered later, its side keys)."""
        return f"{self.prefix}:{{*}}"

    def stream_name(self, key: str) -> str | None:
        """The stream name of a stream key, or None when `key` is not a stream key."""
        head = f"{self.prefix}:{{"
        if key.startswith(head) and key.endswith("}"):
            return key[len(head) : -1]
        return None

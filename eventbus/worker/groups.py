"""Consumer groups: who a consumer is in one, creation, re-creation after they vanish,
and consumer hygiene."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from eventbus.handlers import StartFrom
from eventbus.scripts import SCRIPTS
from eventbus.text import as_text
from eventbus.wire import Pooled

log = logging.getLogger("eventbus.worker")


@dataclass(frozen=True, slots=True)
class Member:
    """One consumer of one group on one stream: the names its Redis calls use."""

    stream: str
    key: str  # the stream's key
    dlq_key: str  # its dead-letter stream's key
    group: str
    consumer: str
    user: str | None = None  # the Redis user, named in a missing-permission message


def start_id(start_from: StartFrom) -> str:
    """The group's initial last-delivered id for a start_from option."""
    if start_from == "new":
        return "$"
    if start_from == "beginning":
        return "0"
    assert isinstance(start_from, datetime)
    ms = int(start_from.timestamp() * 1000)
    # last-delivered just before `ms`: entries at or after that time are delivered
    return f"{ms - 1}-18446744073709551615" if ms > 0 else "0"


def is_nogroup(exc: BaseException) -> bool:
    # "in", not "startswith": before Redis 7 an error inside a script arrives wrapped
    # as "ERR Error running script ... NOGROUP ..."
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


async def create_group(client: Redis, key: str, group: str, first_id: str) -> bool:
    """Create `group` on `key` (and the stream); False when it already existed."""
    try:
        await client.xgroup_create(key, group, id=first_id, mkstream=True)
    except ResponseError as exc:
        if str(exc).startswith("BUSYGROUP"):
            return False
        raise
    return True


async def last_delivered(client: Redis, key: str, group: str) -> str | None:
    for info in await client.xinfo_groups(key):
        name = info["name"]
        if as_text(name) == group:
            value = info["last-delivered-id"]
            return as_text(value)
    return None


async def warn_if_renamed(
    client: Redis, key: str, stream: str, *, handler: str, old: str, new: str, created: bool
) -> None:
    """Warn when `old`, eventbus 0.1's default name of `handler`'s group (now `new`), still
    exists on the stream: nothing reads it any more, and it holds back trimming."""
    for info in await client.xinfo_groups(key):
        name = info["name"]
        if as_text(name) != old:
            continue
        lag = info.get("lag")
        log.warning(
            "handler %s: group %s on %s is from eventbus 0.1's default naming (%d pending, "
            "%s unread) and is no longer read: the handler's group is now %s (%s). Pass "
            "group=%r to subscribe() to keep the old group, or delete it with `eventbus "
            "group delete %s %s` (until then it holds back trimming)",
            handler,
            old,
            key,
            int(info["pending"]),
            "?" if lag is None else int(lag),
            new,
            "created now" if created else "it exists too",
            old,
            stream,
            old,
        )
        return


async def recreate_group(client: Redis, key: str, group: str, last_seen: str | None) -> str:
    """Re-create a group that disappeared; returns the id it restarts after.

    If the last entry we saw is still in the stream, only the group was lost:
    resume after it. Otherwise the stream itself was lost (FLUSHALL, a restart
    without persistence) and everything in it now is new: start from the beginning.
    """
    resume = "0"
    if last_seen is not None and await client.xrange(key, last_seen, last_seen, count=1):
        resume = last_seen
    created = await create_group(client, key, group, resume)
    if created:
        log.warning("group %s on %s had vanished; re-created after id %s", group, key, resume)
    return resume


async def delete_idle_consumers(
    client: Redis,
    wire: Pooled,
    key: str,
    group: str,
    *,
    me: str,
    idle_ms: int,
) -> list[str]:
    """Delete consumers idle longer than `idle_ms` that own no pending entries."""
    deleted = []
    for info in await client.xinfo_consumers(key, group):
        name = as_text(info["name"])
        if name == me or int(info["pending"]) > 0 or int(info["idle"]) < idle_ms:
            continue
        if await wire.script(SCRIPTS.delete_consumer, [key], [group, name]):
            deleted.append(name)
            log.info("deleted idle consumer %s of %s/%s", name, key, group)
    return deleted

"""A worker's permission check at start: every command it will send, asked of Redis's
ACL up front (``redis.acl_check_cmd``, Redis >= 7.0), so a least-privilege user missing
one fails the start with one message naming each missing command, instead of an outage
that looks like a network problem."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from eventbus.errors import PermissionDenied
from eventbus.permissions import explain_noperm, is_noperm, user_of
from eventbus.scripts import SCRIPTS
from eventbus.wire import Arg

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.worker.consumer import GroupConsumer

log = logging.getLogger("eventbus.worker")

# (ACL name of the command, the command as the worker sends it); "{k}" is the stream
# key, "{d}" its dead-letter stream, "{g}" the group, "{c}" the consumer, "{m}" a marker.
_GROUP_COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("xreadgroup", ("XREADGROUP", "GROUP", "{g}", "{c}", "COUNT", "1", "STREAMS", "{k}", ">")),
    ("xack", ("XACK", "{k}", "{g}", "0-1")),
    ("xclaim", ("XCLAIM", "{k}", "{g}", "{c}", "0", "0-1", "JUSTID")),
    ("xautoclaim", ("XAUTOCLAIM", "{k}", "{g}", "{c}", "0", "0-0", "JUSTID")),
    ("xpending", ("XPENDING", "{k}", "{g}", "-", "+", "1")),
    ("xrange", ("XRANGE", "{k}", "-", "+", "COUNT", "1")),
    ("xgroup|create", ("XGROUP", "CREATE", "{k}", "{g}", "$", "MKSTREAM")),
    ("xgroup|delconsumer", ("XGROUP", "DELCONSUMER", "{k}", "{g}", "{c}")),
    ("xinfo|groups", ("XINFO", "GROUPS", "{k}")),
    ("xinfo|consumers", ("XINFO", "CONSUMERS", "{k}", "{g}")),
    ("xinfo|stream", ("XINFO", "STREAM", "{k}")),
    ("xtrim", ("XTRIM", "{k}", "MINID", "=", "0")),
    ("xlen", ("XLEN", "{d}")),
    ("xadd", ("XADD", "{d}", "*", "f", "v")),
)
_IDEMPOTENCY_COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("get", ("GET", "{m}")),
    ("set", ("SET", "{m}", "v", "PX", "1")),
    ("del", ("DEL", "{m}")),
    ("pexpire", ("PEXPIRE", "{m}", "1")),
)
_CONNECTION_COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("client|id", ("CLIENT", "ID")),
    ("client|unblock", ("CLIENT", "UNBLOCK", "1")),
    ("evalsha", ("EVALSHA", "0" * 40, "0")),
    ("eval", ("EVAL", "return 1", "0")),
    ("ping", ("PING",)),
)


def _commands(consumers: Sequence[GroupConsumer]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(ACL name, what it is for, command) for every command the consumers send."""
    out = [(name, "", command) for name, command in _CONNECTION_COMMANDS]
    for c in consumers:
        values = {"{k}": c.key, "{d}": c.dlq_key, "{g}": c.group, "{c}": c.consumer}
        table = _GROUP_COMMANDS
        if c.spec.idempotency is not None and c.spec.idempotency.store_url is None:
            values["{m}"] = c.bus.keys.idem(c.stream, c.group, "preflight")
            table = _GROUP_COMMANDS + _IDEMPOTENCY_COMMANDS
        for name, command in table:
            filled = tuple(values.get(arg, arg) for arg in command)
            out.append((name, f"{c.stream}/{c.group}", filled))
    return out


async def check_permissions(bus: EventBus, consumers: Sequence[GroupConsumer]) -> None:
    """Raise PermissionDenied naming every command (and on what) the Redis user may not
    run. Servers before 7.0 cannot tell: then missing permissions show as they strike."""
    commands = _commands(consumers)
    args: list[Arg] = []
    for _, _, command in commands:
        args.append(len(command))
        args.extend(command)
    try:
        denied = await bus.wire.script(SCRIPTS.acl_probe, [], args)
    except (RedisError, OSError) as exc:
        if is_noperm(exc):  # not even the scripts the worker runs on every delivery
            raise PermissionDenied(
                explain_noperm(exc, user=user_of(bus.url), what=bus.display_url)
            ) from None
        log.debug("permission check skipped: %s", exc)  # unreachable: the loops retry
        return
    if not denied or int(denied[0]) == -1:
        return
    missing: dict[str, list[str]] = {}
    for index in denied:
        name, where, _ = commands[int(index) - 1]
        places = missing.setdefault(name, [])
        if where and where not in places:
            places.append(where)
    user = user_of(bus.url) or "default"
    listed = "; ".join(
        f"{name} (for {', '.join(places)})" if places else name for name, places in missing.items()
    )
    grant = " ".join(f"+{name}" for name in missing)
    raise PermissionDenied(
        f"the Redis user {user!r} at {bus.display_url} may not run what this worker needs: "
        f"{listed}. Grant it with ACL SETUSER {user} {grant} (and key access, e.g. "
        f"~{bus.keys.prefix}:*); see docs/delivery.md, 'Permissions'"
    )

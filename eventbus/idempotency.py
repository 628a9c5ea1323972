"""Consumer-side idempotency: a marker per (group, idempotency key) makes a handler's
effect happen once, and a transaction makes Redis-resident effects exactly once.

The idempotency key is the publisher's ``key`` when it set one, else the stream id. The
protocol (DESIGN.md, "Idempotency"):

- begin: ``idem_begin.lua`` claims the marker with our token for a lease: acquired, done
  (a duplicate: acknowledge it, do not run) or busy (in flight elsewhere: retry later);
- the claim is extended with the entry's lease;
- success: ``idem_commit.lua`` marks the key done (with a TTL, 24 h by default) and
  acknowledges the entry, in one script, batched;
- failure: ``idem_abort.lua`` deletes the claim if it is still ours, then the entry is
  released with backoff as usual.

With ``ctx.transaction()``, the writes a handler queues run in one script with the check
of the claim, the done marker and the XACK (``idem_tx_commit.lua``): all of them happen,
or none; and never twice, whatever the on_store_error policy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from eventbus.connection import make_client
from eventbus.durations import Duration, seconds
from eventbus.errors import ConfigurationError
from eventbus.scripts import SCRIPTS
from eventbus.text import as_text
from eventbus.wire import Arg, Pooled

log = logging.getLogger("eventbus.idempotency")

StoreErrorPolicy = Literal["fail_open", "fail_closed"]
Verdict = Literal["acquired", "done", "busy"]
DEFAULT_TTL = timedelta(hours=24)
# Lua's unpack() takes at most about 8,000 values: the bound of one queued command
MAX_COMMAND_ARGS = 7000


@dataclass(frozen=True, slots=True)
class TxOutcome:
    """What a transactional commit did: "applied" (with the errors of commands that
    failed while running), "done" (the key was already handled: nothing applied, entry
    acknowledged) or "busy" (another delivery holds the key: nothing applied)."""

    verdict: Literal["applied", "done", "busy"]
    details: list[str]


@dataclass(frozen=True, slots=True)
class IdempotencyOptions:
    """A handler's idempotency settings (from ``subscribe(idempotent=True, ...)``)."""

    ttl_s: float
    store_url: str | None  # None: the stream's own Redis
    on_store_error: StoreErrorPolicy

    @classmethod
    def build(
        cls,
        what: str,
        *,
        ttl: Duration = DEFAULT_TTL,
        store: str | None = None,
        on_store_error: str = "fail_open",
    ) -> IdempotencyOptions:
        ttl_s = seconds(ttl, name=f"{what}: idempotency_ttl")
        if ttl_s <= 0:
            raise ConfigurationError(f"{what}: idempotency_ttl must be positive")
        if store is not None and not isinstance(store, str):
            raise ConfigurationError(
                f"{what}: idempotency_store must be a Redis URL (redis://, rediss://, unix://)"
            )
        if on_store_error not in ("fail_open", "fail_closed"):
            raise ConfigurationError(
                f"{what}: on_store_error must be 'fail_open' or 'fail_closed', "
                f"got {on_store_error!r}"
            )
        return cls(ttl_s, store, on_store_error)  # type: ignore[arg-type]


class Transaction:
    """Redis writes a handler queues; the worker runs them in one script with the
    idempotency marker and the XACK once the handler has succeeded.

        tx = ctx.transaction()
        tx.hincrby("notes:by-author", event.author, 1)
        tx.call("ZADD", "notes:recent", ts, event.note_id)

    Reads do not belong here (they would run at commit time, after the handler): read
    with ``ctx.bus.redis`` and queue the writes. In a Redis Cluster every key must be in
    the stream's slot: use ``ctx.slot_key(name)``.
    """

    __slots__ = ("commands",)

    def __init__(self) -> None:
        self.commands: list[tuple[Arg, ...]] = []

    def call(self, *args: Arg) -> None:
        """Queue any Redis command (``tx.call("HSET", key, field, value)``)."""
        if not args:
            raise ConfigurationError("Transaction.call needs a command")
        if len(args) > MAX_COMMAND_ARGS:
            raise ConfigurationError(
                f"Transaction: {args[0]!r} has {len(args):,} arguments; at most "
                f"{MAX_COMMAND_ARGS:,} fit one queued command: split it into several calls"
            )
        for arg in args:
            if not isinstance(arg, (bytes, str, int, float)) or isinstance(arg, bool):
                raise ConfigurationError(
                    f"Transaction: {args[0]!r} argument {arg!r} is a {type(arg).__name__}; "
                    "Redis arguments are str, bytes, int or float"
                )
        self.commands.append(args)

    def set(self, key: str, value: Arg, *, ex: int | None = None) -> None:
        self.call("SET", key, value, *(("EX", ex) if ex is not None else ()))

    def delete(self, *keys: str) -> None:
        self.call("DEL", *keys)

    def incr(self, key: str, amount: int = 1) -> None:
        self.call("INCRBY", key, amount)

    def hset(self, key: str, field: str, value: Arg) -> None:
        self.call("HSET", key, field, value)

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        self.call("HINCRBY", key, field, amount)

    def sadd(self, key: str, *members: Arg) -> None:
        self.call("SADD", key, *members)

    def rpush(self, key: str, *values: Arg) -> None:
        self.call("RPUSH", key, *values)

    def zadd(self, key: str, score: float, member: Arg) -> None:
        self.call("ZADD", key, score, member)

    def expire(self, key: str, seconds: int) -> None:
        self.call("EXPIRE", key, seconds)

    def __len__(self) -> int:
        return len(self.commands)


class IdempotencyGuard:
    """The markers of one idempotent handler's group on one stream."""

    def __init__(
        self,
        options: IdempotencyOptions,
        *,
        main: Pooled,
        marker_prefix: str,
        stream_key: str,
        group: str,
        consumer: str,
        lease_ms: int,
    ) -> None:
        self.options = options
        self.same_store = options.store_url is None
        self._main = main
        self._store_client: Redis | None = None
        if options.store_url is not None:
            self._store_client = make_client(options.store_url)
            self.store = Pooled(self._store_client)
        else:
            self.store = main
        self._prefix = marker_prefix
        self._stream_key = stream_key
        self._group = group
        self._consumer = consumer
        self._lease_ms = lease_ms
        self._ttl_ms = max(1, int(options.ttl_s * 1000))

    def marker(self, idempotency_key: str) -> str:
        return f"{self._prefix}{idempotency_key}"

    def token(self, stream_id: str, attempt: int) -> str:
        """Unique per attempt: a retry never mistakes an earlier attempt's claim (say, a
        sync handler still running past its timeout) for its own."""
        return f"{self._consumer}:{stream_id}:{attempt}"

    async def begin(self, marker: str, token: str) -> Verdict:
        reply = await self.store.script(SCRIPTS.idem_begin, [marker], [token, self._lease_ms])
        verdict = reply.decode() if isinstance(reply, bytes) else str(reply)
        assert verdict in ("acquired", "done", "busy"), verdict
        return verdict  # type: ignore[return-value]

    async def abort(self, marker: str, token: str) -> None:
        await self.store.script(SCRIPTS.idem_abort, [marker], [token])

    async def extend(self, claims: Sequence[tuple[str, str]]) -> None:
        if claims:
            await self.store.script(
                SCRIPTS.idem_extend,
                [m for m, _ in claims],
                [self._lease_ms, *(t for _, t in claims)],
            )

    async def commit(self, done: Sequence[tuple[str, str]]) -> None:
        """Mark (stream id, marker) pairs done and acknowledge the entries: one script
        when the store is the stream's Redis; else two calls (marker, then XACK)."""
        if self.same_store:
            await self._main.script(
                SCRIPTS.idem_commit,
                [self._stream_key, *(m for _, m in done)],
                [self._group, self._ttl_ms, *(i for i, _ in done)],
            )
            return
        try:
            await self.store.script(SCRIPTS.idem_mark, [m for _, m in done], [self._ttl_ms])
        except (RedisError, OSError) as exc:
            if self.options.on_store_error == "fail_closed":
                raise  # the batch is retried: marked done first, acknowledged after
            log.warning(
                "%s: could not mark %d keys done (%s); acknowledged anyway (fail_open): "
                "a later duplicate of these keys would run",
                self._group,
                len(done),
                exc,
            )
        await self._main.call("XACK", self._stream_key, self._group, *(i for i, _ in done))

    async def commit_transaction(
        self, stream_id: str, marker: str, token: str, tx: Transaction
    ) -> TxOutcome:
        """Run `tx`, mark the key done and acknowledge the entry in one script, if the
        key is free or held with `token` (for a fail_open run while the store was
        unreachable, the token its begin tried).

        A command Redis rejects before running any (unknown, wrong arity, no permission)
        raises ResponseError with nothing applied: the caller fails the attempt."""
        args: list[Arg] = [self._group, stream_id, token, self._ttl_ms, len(tx.commands)]
        for command in tx.commands:
            args.append(len(command))
            args.extend(command)
        reply = await self._main.script(SCRIPTS.idem_tx_commit, [self._stream_key, marker], args)
        verdict = as_text(reply[0])
        if verdict == "applied":
            errors = [as_text(e) for e in reply[1:]]
            if errors:
                # Redis does not roll back a command that fails while running: say so loudly
                log.error(
                    "%s: %d command(s) of the transaction of %s failed (the others, the done "
                    "marker and the ack were applied): %s",
                    self._group,
                    len(errors),
                    stream_id,
                    errors[0],
                )
            return TxOutcome("applied", errors)
        if verdict == "done":
            return TxOutcome("done", [])
        return TxOutcome("busy", [as_text(r) for r in reply[1:]])

    async def aclose(self) -> None:
        if self._store_client is not None:
            await self.store.aclose()
            await self._store_client.aclose()

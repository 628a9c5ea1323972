"""One handler's consumer group on one stream: read, handle, ack / release / dead-letter.

Each `GroupConsumer` has its own reader connection, its own concurrency limit
and its own retry state, so a slow or failing handler never holds up another.
The delivery protocol (DESIGN.md, "Delivery protocol"):

- read with ``XREADGROUP ... COUNT <free slots>``: nothing waits prefetched;
- every ``lease/3`` the lease keeper resets the idle clock of what we hold;
- success: the id joins the next batched XACK;
- failure: the entry is released with ``XCLAIM ... IDLE <lease - backoff>`` so
  it becomes claimable after the backoff: the pending list is the retry queue;
- about once a second ``XAUTOCLAIM <lease>`` picks up released entries and those
  of dead consumers; the delivery count it increments is the attempt number;
- past ``max_attempts`` (or undecodable), the entry moves to the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventbus import tracing
from eventbus.backoff import Reconnect
from eventbus.context import Context
from eventbus.envelope import Envelope, PayloadDecoders, parse_fields
from eventbus.errors import DecodeError, PermissionDenied
from eventbus.events import Event, lookup
from eventbus.idempotency import IdempotencyGuard
from eventbus.permissions import explain_noperm, is_noperm, user_of
from eventbus.publishing.core import DEFAULT_MAX_EVENT_BYTES
from eventbus.scripts import SCRIPTS
from eventbus.streamid import ms_of
from eventbus.waiting import wait_for_event
from eventbus.wire import Arg, Dedicated
from eventbus.worker.acks import AckBatcher
from eventbus.worker.claims import Claims
from eventbus.worker.deadletter import (
    MAX_NAME_CHARS,
    clip,
    clip_repr,
    describe,
    dlq_fields,
    entry_size,
    traceback_tail,
)
from eventbus.worker.delivery import Delivery
from eventbus.worker.groups import (
    create_group,
    is_nogroup,
    last_delivered,
    recreate_group,
    start_id,
    warn_if_renamed,
)
from eventbus.worker.leases import LeaseKeeper
from eventbus.worker.ratelimit import RateLimited
from eventbus.worker.settings import WorkerSettings
from eventbus.worker.stats import GroupStats

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.handlers import HandlerSpec

log = logging.getLogger("eventbus.worker")

CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
# bytes an entry may hold beyond max_event_bytes: field names, id, type, source, time,
# trace context (a publisher's limit counts only the payload, key and headers)
ENVELOPE_ALLOWANCE = 64 * 1024


class HandlerCancelled(Exception):
    """The handler raised CancelledError without the worker cancelling it."""


class GroupConsumer:
    """Runs one handler's group on one stream."""

    def __init__(
        self,
        bus: EventBus,
        spec: HandlerSpec,
        stream: str,
        consumer: str,
        settings: WorkerSettings,
    ) -> None:
        self.bus = bus
        self.spec = spec
        self.stream = stream
        self.consumer = consumer
        self.settings = settings
        self.group = spec.group(bus.service)
        self.key = bus.keys.stream(stream)
        self.dlq_key = bus.keys.dlq(stream)
        self.stats = GroupStats()
        self._types: dict[str, type[Event]] = dict(spec.types[stream])
        self._decoders = PayloadDecoders()
        self._lease_ms = int(spec.lease_s * 1000)
        self._free = spec.concurrency
        self._owned: dict[str, Delivery] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._ready = asyncio.Event()
        self._stopping = False
        self._client = bus.redis
        self._wire = bus.wire
        self._reader = Dedicated(bus.redis, socket_timeout=settings.block_ms / 1000 + 10)
        self._reading = False
        self._last_seen: str | None = None
        self._cursor = "0-0"
        self._next_reclaim = 0.0
        self._user = user_of(bus.url)
        self._warn = RateLimited(log)
        self._fatal: BaseException | None = None
        limit = spec.max_event_bytes or bus.streams.get(stream).max_event_bytes
        self._max_event_bytes = limit or DEFAULT_MAX_EVENT_BYTES
        where = f"{self.key}/{self.group}"
        self._acks: AckBatcher[str] = AckBatcher(
            self._xack, self._acked, where=where, user=self._user
        )
        guard = (
            IdempotencyGuard(
                spec.idempotency,
                main=self._wire,
                marker_prefix=bus.keys.idem(stream, self.group, ""),
                stream_key=self.key,
                group=self.group,
                consumer=consumer,
                lease_ms=self._lease_ms,
            )
            if spec.idempotency is not None
            else None
        )
        self._claims = (
            Claims(
                guard,
                group=self.group,
                stats=self.stats,
                owned=self._owned,
                bounce=self._bounce,
                retry=self._retry_later,
                succeeded=self._succeeded,
                failed=self._failed,
                user=self._user,
            )
            if guard is not None
            else None
        )
        self._commits: AckBatcher[tuple[str, str]] = AckBatcher(
            self._commit, self._committed, where=where, user=self._user
        )
        self._lease_lock = asyncio.Lock()
        self._leases = LeaseKeeper(
            self._wire,
            key=self.key,
            group=self.group,
            consumer=consumer,
            lease_s=spec.lease_s,
            settings=settings,
            held=lambda: list(self._owned),
            lost=self._lease_lost,
            lock=self._lease_lock,
            also=self._claims.extend if self._claims is not None else None,
        )
        self._executor = (
            None
            if spec.is_async
            else ThreadPoolExecutor(spec.concurrency, thread_name_prefix=f"eventbus-{spec.name}")
        )
        self._loops: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._read_loop(), name=f"eventbus-read-{self.group}"),
            loop.create_task(self._leases.run(), name=f"eventbus-lease-{self.group}"),
        ]

    async def wait_ready(self) -> None:
        """Wait until the group exists in Redis (so new events are not missed); raises
        PermissionDenied when the Redis user may not create or read it."""
        await self._ready.wait()
        if self._fatal is not None:
            raise self._fatal

    @property
    def in_flight(self) -> int:
        return self.spec.concurrency - self._free

    async def stop(self, deadline: float, hurry: asyncio.Event | None = None) -> None:
        """Graceful stop: no new reads; in-flight handlers get until `deadline` (loop
        time), their leases still extended; the rest are released claimable at once;
        acks are flushed; the consumer is deleted if it owns nothing."""
        self._stopping = True
        self._stop_event.set()
        self._slot_freed.set()
        await self._stop_reader()
        await self._drain(deadline, hurry or asyncio.Event())
        unfinished = [t for t in self._tasks if not t.done()]
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished, timeout=5)
        await self._release_for_shutdown()
        for batcher in (self._acks, self._commits):
            if not await batcher.flush(timeout=5):
                log.warning(
                    "%s: %d acks could not be flushed; those entries will be redelivered",
                    self.group,
                    batcher.backlog,
                )
            await batcher.close()
        self._leases.stop()
        for task in self._loops:
            task.cancel()
        if self._loops:  # none when the worker was stopped before it started them
            await asyncio.wait(self._loops, timeout=5)
        await self._delete_self()
        await self._reader.aclose()
        if self._claims is not None:
            await self._claims.guard.aclose()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _drain(self, deadline: float, hurry: asyncio.Event) -> None:
        """Wait for in-flight handlers until `deadline`, or until `hurry` is set."""
        if not self._tasks or hurry.is_set():
            return
        loop = asyncio.get_running_loop()
        all_done = loop.create_task(asyncio.wait(set(self._tasks)))
        hurried = loop.create_task(hurry.wait())
        await asyncio.wait(
            {all_done, hurried},
            timeout=max(0.0, deadline - loop.time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        for waiter in (all_done, hurried):
            waiter.cancel()
        await asyncio.wait({all_done, hurried})

    async def _stop_reader(self) -> None:
        """Unblock the reader (CLIENT UNBLOCK, not Task.cancel: a cancel can be lost while
        redis-py starts a command) and wait for its loop to notice the stop flag."""
        reader = self._loops[0] if self._loops else None
        if reader is None:
            return
        for _ in range(50):
            if reader.done():
                return
            if self._reading and self._reader.client_id is not None:
                with contextlib.suppress(RedisError):
                    await self._client.client_unblock(self._reader.client_id)
            await asyncio.wait({reader}, timeout=0.2)
        reader.cancel()

    async def _release_for_shutdown(self) -> None:
        unfinished = [d for d in self._owned.values() if not d.done]
        if not unfinished:
            return
        if self._claims is not None and self._executor is None:
            # so whoever takes them over can claim their keys at once (sync handlers'
            # threads may still run: their claims expire with the lease instead)
            await asyncio.gather(*(self._claims.drop(d) for d in unfinished))
        # claimable at once; the interrupted delivery does not count as an attempt
        released = await self._release(unfinished, idle_ms=self._lease_ms, restore_count=True)
        log.info("%s: released %d unfinished entries on shutdown", self.group, released)

    async def _delete_self(self) -> None:
        try:
            await self._wire.script(
                SCRIPTS.delete_consumer, [self.key], [self.group, self.consumer]
            )
        except RedisError as exc:
            log.debug("%s: could not delete consumer %s: %s", self.group, self.consumer, exc)

    async def _sleep(self, delay: float) -> None:
        """Sleep that ends early on stop."""
        await wait_for_event(self._stop_event, delay)

    # -- the read loop -----------------------------------------------------------------

    async def _read_loop(self) -> None:
        reconnect = Reconnect()
        while not self._stopping:
            try:
                await self._step()
                reconnect.reset()
            except CONNECTION_ERRORS as exc:
                self._reader.reset()
                await self._connection_lost(exc, reconnect)
            except ResponseError as exc:
                if is_nogroup(exc):
                    await self._group_lost(reconnect)
                    continue
                delay = reconnect.next_delay()
                if is_noperm(exc):
                    message = explain_noperm(exc, user=self._user, what=self.group)
                    if not self._ready.is_set():  # at start: fail the worker's start
                        self._fatal = PermissionDenied(message)
                        self._ready.set()
                        return
                    self._warn.error("noperm", "%s; retrying in %.1fs", message, delay)
                else:
                    self._warn.error(
                        "redis",
                        "%s: Redis error %s; retrying in %.1fs",
                        self.group,
                        describe(exc),
                        delay,
                    )
                await self._sleep(delay)
            except Exception:
                # never let the reader die: a dead reader silently stops the group
                delay = reconnect.next_delay()
                log.exception("%s: unexpected error in the read loop; retrying", self.group)
                await self._sleep(delay)

    async def _step(self) -> None:
        """One turn of the loop: reclaim when due, else read."""
        loop = asyncio.get_running_loop()
        if not self._ready.is_set():
            await self._setup()
        if self._free <= 0:
            await self._wait_for_slot()
            return
        if loop.time() >= self._next_reclaim:
            # scheduled before the call, so a failing reclaim never starves the reads
            self._next_reclaim = loop.time() + self._reclaim_interval()
            if await self._reclaim():
                self._next_reclaim = loop.time()  # more may be waiting: back after one read
                if self._free > 0:
                    await self._read(1)
            return
        if self._free < self.spec.concurrency:
            # let just-dispatched handlers run first: quick ones free their slots,
            # and the next read fetches a fuller batch
            await asyncio.sleep(0)
        block_ms = min(self.settings.block_ms, int((self._next_reclaim - loop.time()) * 1000))
        await self._read(max(1, block_ms))

    def _reclaim_interval(self) -> float:
        return self.settings.reclaim_interval_s * random.uniform(0.8, 1.2)

    async def _setup(self) -> None:
        created = await create_group(
            self._client, self.key, self.group, start_id(self.spec.start_from)
        )
        if created:
            log.info("created group %s on %s", self.group, self.key)
        old = self.spec.legacy_group(self.bus.service)
        if old is not None:
            await warn_if_renamed(
                self._client,
                self.key,
                self.stream,
                handler=self.spec.name,
                old=old,
                new=self.group,
                created=created,
            )
        self._last_seen = await last_delivered(self._client, self.key, self.group)
        self._ready.set()

    async def _wait_for_slot(self) -> None:
        self._slot_freed.clear()
        if self._free <= 0 and not self._stopping:
            await self._slot_freed.wait()

    async def _read(self, block_ms: int) -> None:
        await self._reader.connect()
        self._reading = True
        try:
            response: Any = await self._reader.call(
                "XREADGROUP",
                "GROUP",
                self.group,
                self.consumer,
                "COUNT",
                self._free,
                "BLOCK",
                block_ms,
                "STREAMS",
                self.key,
                ">",
            )
        finally:
            self._reading = False
        if not response:
            return
        # RESP2: [[key, entries]]; RESP3 (a client built with protocol=3): {key: entries}
        entries = response[0][1] if isinstance(response, list) else next(iter(response.values()))
        for raw_id, fields in entries:
            stream_id = raw_id.decode()
            self._dispatch(Delivery(stream_id, fields, 1))
        self._last_seen = stream_id

    async def _reclaim(self) -> int:
        """XAUTOCLAIM entries idle past the lease, up to our free slots; how many."""
        result = await self._reader.script(
            SCRIPTS.reclaim,
            [self.key],
            [self.group, self.consumer, self._lease_ms, self._cursor, self._free],
        )
        self._cursor = result[0].decode()
        for raw_id, fields, count in result[1:]:
            stream_id = raw_id.decode()
            self.stats.reclaimed += 1
            held = self._owned.get(stream_id)
            if held is not None:  # our own lease lapsed (Redis was away); still ours
                held.count = int(count)
                continue
            delivery = Delivery(stream_id, fields, int(count))
            if delivery.count > self.spec.max_attempts:
                self._owned[stream_id] = delivery
                await self._dead_letter(
                    delivery,
                    reason="attempts_exhausted",
                    error_type="AttemptsExhausted",
                    error=(
                        f"delivered {delivery.count - 1} times without completing "
                        f"(max_attempts={self.spec.max_attempts}); the worker handling it "
                        "crashed or lost its lease each time"
                    ),
                )
            else:
                self._dispatch(delivery)
        return len(result) - 1

    async def _connection_lost(self, exc: BaseException, reconnect: Reconnect) -> None:
        delay = reconnect.next_delay()
        level = logging.WARNING if reconnect.failures <= 3 else logging.ERROR
        log.log(
            level,
            "%s: cannot reach Redis at %s (%s); retrying in %.1fs",
            self.group,
            self.bus.display_url,
            describe(exc),
            delay,
        )
        try:
            await self.bus.recover()
        except Exception as recover_exc:  # the embedded server could not restart
            log.error("%s: %s", self.group, recover_exc)
        await self._sleep(delay)

    async def _group_lost(self, reconnect: Reconnect) -> None:
        delay = reconnect.next_delay()
        try:
            await recreate_group(self._client, self.key, self.group, self._last_seen)
            self._cursor = "0-0"
        except RedisError as exc:
            log.warning("%s: group re-creation failed (%s)", self.group, exc)
        await self._sleep(delay)

    # -- one entry ---------------------------------------------------------------------

    def _dispatch(self, delivery: Delivery) -> None:
        self._owned[delivery.stream_id] = delivery
        self._free -= 1
        task = asyncio.get_running_loop().create_task(self._process(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, delivery: Delivery) -> None:
        """One delivery, start to end; whatever goes wrong, the entry is never stranded."""
        try:
            await self._handle(delivery)
            if delivery.overrun is not None:
                # the handler's thread is still running: keep its slot until it returns
                await asyncio.wait({delivery.overrun})
                if self._claims is not None:
                    await self._claims.release_hold(delivery)
        except asyncio.CancelledError:
            raise  # shutdown: stop() releases what is unfinished
        except Exception:
            log.exception(
                "%s: internal error on %s; releasing it for a retry", self.group, delivery.stream_id
            )
            if delivery.stream_id in self._owned and not delivery.done:
                if self._claims is not None:
                    await self._claims.drop(delivery)
                await self._release([delivery], idle_ms=self._retry_idle_ms(delivery))
        finally:
            # the slot is free as soon as this returns (not a loop turn later, in a done
            # callback), so a read right after a burst of quick handlers fills them all
            self._free += 1
            self._slot_freed.set()

    async def _handle(self, delivery: Delivery) -> None:
        """(size check) → decode → (claim) → handle → ack or commit, or release with
        backoff, or dead-letter."""
        if await self._too_large(delivery):
            return
        decoded = await self._decode(delivery)
        if decoded is None:
            return
        envelope, event = decoded
        if self._claims is not None and not await self._claims.claim(delivery, envelope):
            return
        ctx = (
            Context(
                bus=self.bus,
                stream=self.stream,
                group=self.group,
                handler=self.spec.name,
                envelope=envelope,
                delivery_count=delivery.count,
                tx_refusal=(
                    self._claims.tx_refusal(delivery)
                    if self._claims is not None
                    else "it is not idempotent"
                ),
            )
            if self.spec.wants_context
            else None  # a handler taking (event) alone: no context to build
        )
        if not tracing.active():
            await self._run(delivery, event, ctx, None)
            return
        with tracing.processing(
            envelope, stream=self.stream, group=self.group, delivery_count=delivery.count
        ) as span:
            try:
                await self._run(delivery, event, ctx, span)
            finally:
                span.end()

    async def _run(
        self, delivery: Delivery, event: Event, ctx: Context | None, span: Span | None
    ) -> None:
        """Run the handler; then acknowledge or commit, or fail the attempt."""
        if self.settings.metrics:
            self.stats.age.observe(max(0.0, time.time() - ms_of(delivery.stream_id) / 1000))
            started = time.perf_counter()
        try:
            await self._invoke(event, ctx, delivery)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopping or (task is not None and task.cancelling()):
                raise  # the worker cancelled it
            await self._failed(delivery, HandlerCancelled("the handler raised CancelledError"))
        except Exception as exc:
            if span is not None:
                tracing.failed(span, exc)
            await self._failed(delivery, exc)
        else:
            tx = ctx.pending_transaction if ctx is not None else None
            if tx is not None and self._claims is not None:
                await self._claims.commit_transaction(delivery, tx)
            else:
                self._succeeded(delivery)
        finally:
            if self.settings.metrics:
                self.stats.duration.observe(time.perf_counter() - started)

    async def _too_large(self, delivery: Delivery) -> bool:
        """Dead-letter an entry too large to decode, unread; True when it was. The limit
        is the publishers' measure (payload, key and headers: `max_event_bytes`) plus an
        allowance for the rest of the envelope, so whatever a publisher with the same
        limit accepted is consumed."""
        data, other = entry_size(delivery.fields)
        if data + other <= self._max_event_bytes + ENVELOPE_ALLOWANCE:
            return False
        if self._skips_unread(delivery.fields):
            # not this group's to handle (another group's redelivery, a type it does not
            # take): skipped as it would be decoded, not dead-lettered for its size
            self._succeeded(delivery, skipped=True)
            return True
        self.stats.too_large += 1
        await self._dead_letter(
            delivery,
            reason="too_large",
            error_type="EntryTooLarge",
            error=(
                f"entry of {data + other:,} bytes (payload {data:,}) exceeds this worker's "
                f"limit of {self._max_event_bytes:,} bytes (max_event_bytes) plus "
                f"{ENVELOPE_ALLOWANCE:,} for the envelope; it was not decoded. Raise "
                "max_event_bytes (subscribe(...) or Stream(...)) and redrive it, or keep "
                "large payloads outside the event"
            ),
        )
        return True

    def _skips_unread(self, fields: list[bytes]) -> bool:
        """Whether this group would skip the entry, judged from its raw `type` and
        `target` fields alone (the entry is too large to parse whole)."""
        attrs = {
            fields[i]: fields[i + 1]
            for i in range(0, len(fields) - 1, 2)
            if fields[i] in (b"type", b"target")
        }
        try:
            target = attrs.get(b"target")
            if target is not None and target.decode() != self.group:
                return True
            type_name = attrs.get(b"type", b"").decode()
        except UnicodeDecodeError:
            return False
        return type_name not in self._types and lookup(self.stream, type_name) is not None

    async def _decode(self, delivery: Delivery) -> tuple[Envelope, Event] | None:
        """The envelope and event; None when the entry was skipped or dead-lettered."""
        try:
            envelope = parse_fields(delivery.stream_id, delivery.fields)
            cls = self._event_class(envelope)
            if cls is None:  # another group's redelivery, or a type this handler skips
                self._succeeded(delivery, skipped=True)
                return None
            return envelope, self._decoders.decode(envelope, cls)
        except Exception as exc:  # DecodeError, or an Event's __post_init__ raising
            error = clip(exc.reason) if isinstance(exc, DecodeError) else describe(exc)
            error_type = "DecodeError" if isinstance(exc, DecodeError) else type(exc).__name__
            await self._dead_letter(
                delivery, reason="undecodable", error_type=error_type, error=error
            )
            return None

    async def _bounce(self, delivery: Delivery) -> None:
        """Retry later without spending an attempt (the handler did not run)."""
        await self._release([delivery], idle_ms=self._retry_idle_ms(delivery), restore_count=True)

    def _event_class(self, envelope: Envelope) -> type[Event] | None:
        if envelope.target is not None and envelope.target != self.group:
            return None
        cls = self._types.get(envelope.type)
        if cls is not None:
            return cls
        if lookup(self.stream, envelope.type) is not None:
            return None
        raise DecodeError(
            f"unknown event type {clip_repr(envelope.type)} on stream {self.stream!r}: no Event "
            "class in this worker declares it; import the module that declares it, then redrive "
            "this entry from the dead-letter stream"
        )

    async def _invoke(self, event: Event, ctx: Context | None, delivery: Delivery) -> None:
        spec = self.spec
        if self._executor is None:
            awaitable = spec.call(event, ctx)
            assert awaitable is not None
            if spec.timeout_s is None:
                await awaitable
            else:
                async with asyncio.timeout(spec.timeout_s):
                    await awaitable
            return
        # the handler's thread runs in a copy of this task's context: the delivery's span
        # is current there too, so its own spans and publishes join the trace
        run = contextvars.copy_context().run
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, run, spec.call, event, ctx
        )
        if spec.timeout_s is None:
            await future
            return
        try:
            await asyncio.wait_for(asyncio.shield(future), spec.timeout_s)
        except TimeoutError:
            # A thread cannot be stopped: the attempt fails now, and the slot stays taken
            # until the thread returns, so the pool never queues work behind it.
            delivery.overrun = future
            raise

    def _succeeded(
        self, delivery: Delivery, *, skipped: bool = False, duplicate: bool = False
    ) -> None:
        delivery.done = True
        if not (skipped or duplicate):
            self.stats.ok += 1
            if delivery.count > 1:
                self.stats.retried_ok += 1
        elif skipped:
            self.stats.skipped += 1
        marker = delivery.marker or delivery.unguarded
        if marker is not None and not duplicate:
            self._commits.add((delivery.stream_id, marker))
        else:
            self._acks.add(delivery.stream_id)

    async def _xack(self, stream_ids: list[str]) -> None:
        await self._wire.call("XACK", self.key, self.group, *stream_ids)

    async def _commit(self, done: list[tuple[str, str]]) -> None:
        assert self._claims is not None
        await self._claims.commit(done)

    def _acked(self, stream_ids: list[str]) -> None:
        for stream_id in stream_ids:
            self._owned.pop(stream_id, None)

    def _committed(self, done: list[tuple[str, str]]) -> None:
        for stream_id, _ in done:
            self._owned.pop(stream_id, None)

    def _lease_lost(self, stream_id: str) -> None:
        held = self._owned.pop(stream_id, None)
        if held is not None and not held.done:
            log.warning(
                "%s: lost the lease of %s (another consumer claimed it); it may be handled twice",
                self.group,
                stream_id,
            )

    async def _retry_later(self, delivery: Delivery) -> None:
        """Release for a retry after the backoff, counting the attempt."""
        await self._release([delivery], idle_ms=self._retry_idle_ms(delivery))

    def _retry_idle_ms(self, delivery: Delivery) -> int:
        delay = min(self.spec.backoff.delay(delivery.count), self.spec.lease_s)
        return self._lease_ms - int(delay * 1000)

    async def _failed(self, delivery: Delivery, exc: Exception) -> None:
        if self._claims is not None:
            if delivery.overrun is not None:
                self._claims.hold(delivery)  # its thread still runs: keep the key claimed
            else:
                await self._claims.drop(delivery)
        error = describe(exc, self.spec.timeout_s)
        if delivery.count >= self.spec.max_attempts:
            log.error(
                "%s: %s failed on attempt %d of %d, dead-lettering: %s",
                self.group,
                delivery.stream_id,
                delivery.count,
                self.spec.max_attempts,
                error,
            )
            await self._dead_letter(
                delivery,
                reason="failed",
                error_type=type(exc).__name__,
                error=error,
                tb=traceback_tail(exc),
            )
            return
        self.stats.errors += 1  # a failed attempt to retry (a last one counts as dead)
        idle_ms = self._retry_idle_ms(delivery)
        log.warning(
            "%s: %s failed on attempt %d of %d, retrying in %.1fs: %s",
            self.group,
            delivery.stream_id,
            delivery.count,
            self.spec.max_attempts,
            (self._lease_ms - idle_ms) / 1000,
            error,
        )
        await self._release([delivery], idle_ms=idle_ms)

    async def _release(
        self, deliveries: list[Delivery], *, idle_ms: int, restore_count: bool = False
    ) -> int:
        """Hand entries back to the pending list, claimable when idle reaches the lease."""
        args: list[Arg] = [self.group, self.consumer, max(0, idle_ms)]
        for d in deliveries:
            args += [d.stream_id, max(0, d.count - 1) if restore_count else -1]
        async with self._lease_lock:  # no heartbeat may land after this and undo it
            for d in deliveries:
                self._owned.pop(d.stream_id, None)
            try:
                return int(await self._wire.script(SCRIPTS.release, [self.key], args))
            except RedisError as exc:
                # Still pending in Redis: reclaimed once its lease runs out. Nothing is lost.
                self._warn.warning(
                    "release",
                    "%s: release failed (%s); entries return after the lease",
                    self.group,
                    describe(exc),
                )
                return 0

    async def _dead_letter(
        self,
        delivery: Delivery,
        *,
        reason: str,
        error_type: str,
        error: str,
        tb: str = "",
    ) -> None:
        fields = dlq_fields(
            delivery.fields,
            group=self.group,
            handler=self.spec.name,
            stream_id=delivery.stream_id,
            reason=reason,
            error_type=error_type,
            error=error,
            tb=tb,
            attempts=delivery.count,
            consumer=self.consumer,
            max_field_bytes=self._max_event_bytes,
        )
        head: list[Arg] = [self.group, self.consumer, delivery.stream_id, self.settings.dlq_maxlen]
        try:
            moved = await self._wire.script(
                SCRIPTS.dead_letter, [self.key, self.dlq_key], head + fields
            )
        except RedisError as exc:
            # Still pending: reclaimed after the lease, and dead-lettered then.
            self._warn.error(
                "dead-letter",
                "%s: dead-lettering %s failed: %s",
                self.group,
                delivery.stream_id,
                describe(exc),
            )
            moved = None
        if moved:
            self.stats.dead += 1
            self._warn.warning(
                f"dead:{reason}",
                "%s: %s moved to %s (%s: %s)",
                self.group,
                delivery.stream_id,
                self.dlq_key,
                reason,
                clip(error, MAX_NAME_CHARS),
            )
            cut = int(moved[1])
            if cut > 0:
                self.stats.dlq_trimmed += cut
                self._warn.warning(
                    "dlq-cap",
                    "%s: %s is at its cap (dlq_maxlen=%d): its %d oldest dead letters were "
                    "dropped; redrive or purge dead letters, or raise dlq_maxlen",
                    self.group,
                    self.dlq_key,
                    self.settings.dlq_maxlen,
                    cut,
                )
        self._owned.pop(delivery.stream_id, None)

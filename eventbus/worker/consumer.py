"""One handler's consumer group on one stream, and the path of each entry through it.

Each `GroupConsumer` has its own reader connection, its own concurrency limit
and its own retry state, so a slow or failing handler never holds up another.
The delivery protocol (DESIGN.md, "Delivery protocol") is split along its seams:

- `Reader` (reader.py): ``XREADGROUP ... COUNT <free slots>`` (nothing waits
  prefetched), ``XAUTOCLAIM <lease>`` about once a second (released retries, dead
  consumers' entries; the delivery count is the attempt number), recovery;
- `Settler` (settle.py): the one owner of what is held; ack or commit (batched),
  release with ``XCLAIM ... IDLE <lease - backoff>`` for a retry, dead-letter;
- `Invoker` (invoke.py): the handler's call, in a thread or on the loop, its timeout;
- `LeaseKeeper` (leases.py): every ``lease/3`` resets the idle clock of what is held;
- `Claims` (claims.py): an idempotent handler's claim on its key.

This module ties them together: the read loop fills the free slots, and each entry
goes `_dispatch` → `_process` → `_handle`: size check → decode → claim → run the
handler → settle (ack or commit, or release for a retry, or dead-letter).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from opentelemetry.trace import Span
from redis.exceptions import RedisError

from eventbus import tracing
from eventbus.context import Context
from eventbus.envelope import Envelope, PayloadDecoders, parse_fields
from eventbus.errors import DecodeError
from eventbus.events import Event, lookup
from eventbus.idempotency import IdempotencyGuard
from eventbus.permissions import user_of
from eventbus.publishing.core import DEFAULT_MAX_EVENT_BYTES
from eventbus.scripts import SCRIPTS
from eventbus.streamid import ms_of
from eventbus.worker.acks import AckBatcher
from eventbus.worker.claims import Claims
from eventbus.worker.deadletter import entry_size
from eventbus.worker.delivery import Delivery
from eventbus.worker.describe import clip, clip_repr, describe
from eventbus.worker.groups import Member
from eventbus.worker.invoke import HandlerCancelled, Invoker
from eventbus.worker.leases import LeaseKeeper
from eventbus.worker.reader import Reader
from eventbus.worker.settings import WorkerSettings
from eventbus.worker.settle import Settler
from eventbus.worker.stats import GroupStats

if TYPE_CHECKING:
    from eventbus.bus import EventBus
    from eventbus.handlers import HandlerSpec

log = logging.getLogger("eventbus.worker")

# bytes an entry may hold beyond max_event_bytes: field names, id, type, source, time,
# trace context (a publisher's limit counts only the payload, key and headers)
ENVELOPE_ALLOWANCE = 64 * 1024


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
        self._metrics = settings.metrics
        limit = spec.max_event_bytes or bus.streams.get(stream).max_event_bytes
        self._max_event_bytes = limit or DEFAULT_MAX_EVENT_BYTES
        # free concurrency slots: a read never asks for more
        self._free = spec.concurrency
        self._slot_freed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_event = asyncio.Event()
        self._stopping = False
        member = Member(stream, self.key, self.dlq_key, self.group, consumer, user_of(bus.url))
        self._claims = self._make_claims(member)
        self._reader = Reader(
            bus,
            spec,
            member,
            settings=settings,
            stats=self.stats,
            stop=self._stop_event,
        )
        self._settler = Settler(
            bus.wire,
            spec,
            member,
            dlq_maxlen=settings.dlq_maxlen,
            max_event_bytes=self._max_event_bytes,
            stats=self.stats,
            claims=self._claims,
        )
        self._invoker = Invoker(spec)
        self._leases = LeaseKeeper(
            bus.wire,
            member,
            lease_s=spec.lease_s,
            settings=settings,
            holdings=self._settler,
            claims=self._claims,
        )
        self._loops: list[asyncio.Task[None]] = []

    def _make_claims(self, member: Member) -> Claims | None:
        spec = self.spec
        if spec.idempotency is None:
            return None
        guard = IdempotencyGuard(
            spec.idempotency,
            main=self.bus.wire,
            marker_prefix=self.bus.keys.idem(member.stream, member.group, ""),
            stream_key=member.key,
            group=member.group,
            consumer=member.consumer,
            lease_ms=int(spec.lease_s * 1000),
        )
        return Claims(guard, group=member.group, stats=self.stats, user=member.user)

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
        await self._reader.ready.wait()
        if self._reader.fatal is not None:
            raise self._reader.fatal

    @property
    def in_flight(self) -> int:
        return self.spec.concurrency - self._free

    @property
    def _commits(self) -> AckBatcher[tuple[str, str]]:
        """The idempotency commits on their way (tests watch its backlog)."""
        return self._settler.commits

    async def stop(self, deadline: float, hurry: asyncio.Event | None = None) -> None:
        """Graceful stop: no new reads; in-flight handlers get until `deadline` (loop
        time), their leases still extended; the rest are released claimable at once;
        acks are flushed; the consumer is deleted if it owns nothing."""
        self._stopping = True
        self._invoker.stop()
        self._stop_event.set()
        self._slot_freed.set()
        if self._loops:
            await self._reader.halt(self._loops[0])
        await self._drain(deadline, hurry or asyncio.Event())
        unfinished = [t for t in self._tasks if not t.done()]
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished, timeout=5)
        await self._settler.release_unfinished()
        await self._settler.flush()
        self._leases.stop()
        for task in self._loops:
            task.cancel()
        if self._loops:  # none when the worker was stopped before it started them
            await asyncio.wait(self._loops, timeout=5)
        await self._delete_self()
        await self._reader.aclose()
        if self._claims is not None:
            await self._claims.guard.aclose()
        self._invoker.close()

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

    async def _delete_self(self) -> None:
        try:
            await self.bus.wire.script(
                SCRIPTS.delete_consumer, [self.key], [self.group, self.consumer]
            )
        except RedisError as exc:
            log.debug("%s: could not delete consumer %s: %s", self.group, self.consumer, exc)

    # -- the read loop: fill the free slots --------------------------------------------

    async def _read_loop(self) -> None:
        while not self._stopping:
            try:
                await self._step()
            except Exception as exc:
                if not await self._reader.recover(exc):
                    return  # the worker's start fails (wait_ready raises why)
            else:
                self._reader.recovered()

    async def _step(self) -> None:
        """One turn of the loop: reclaim when due, else read; take on what comes."""
        reader = self._reader
        if not reader.ready.is_set():
            await reader.setup()
        if self._free <= 0:
            await self._wait_for_slot()
            return
        if reader.reclaim_due():
            reclaimed = await reader.reclaim(self._free)
            await self._take_reclaimed(reclaimed)
            if reclaimed and self._free > 0:  # more may be waiting: back after one read
                self._dispatch_all(await reader.read(self._free, block_ms=1))
            return
        if self._free < self.spec.concurrency:
            # let just-dispatched handlers run first: quick ones free their slots,
            # and the next read fetches a fuller batch
            await asyncio.sleep(0)
        self._dispatch_all(await reader.read(self._free))

    async def _wait_for_slot(self) -> None:
        self._slot_freed.clear()
        if self._free <= 0 and not self._stopping:
            await self._slot_freed.wait()

    async def _take_reclaimed(self, reclaimed: list[Delivery]) -> None:
        for delivery in reclaimed:
            if self._settler.renew(delivery.stream_id, delivery.count):
                continue  # our own lease lapsed (Redis was away); still ours
            if delivery.count > self.spec.max_attempts:
                self._settler.take(delivery)
                await self._settler.dead_letter(
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

    # -- one entry ---------------------------------------------------------------------

    def _dispatch_all(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self._dispatch(delivery)

    def _dispatch(self, delivery: Delivery) -> None:
        self._settler.take(delivery)
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
            await self._settler.rescue(delivery)
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
        if self._claims is not None and not await self._claim(delivery, envelope):
            return
        ctx = self._context(delivery, envelope) if self.spec.wants_context else None
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
        if self._metrics:
            self.stats.age.observe(max(0.0, time.time() - ms_of(delivery.stream_id) / 1000))
            started = time.perf_counter()
        try:
            error = await self._invoker.run(event, ctx, delivery)
            if error is not None:
                if span is not None and not isinstance(error, HandlerCancelled):
                    tracing.failed(span, error)
                await self._settler.failed(delivery, error)
                return
            tx = ctx.pending_transaction if ctx is not None else None
            if tx is not None and self._claims is not None:
                await self._settler.commit_transaction(delivery, tx)
            else:
                self._settler.succeeded(delivery)
        finally:
            if self._metrics:
                self.stats.duration.observe(time.perf_counter() - started)

    async def _claim(self, delivery: Delivery, envelope: Envelope) -> bool:
        """Claim the idempotency key; False when the handler must not run now."""
        assert self._claims is not None
        verdict = await self._claims.claim(delivery, envelope)
        if verdict == "duplicate":
            self._settler.succeeded(delivery, duplicate=True)
        elif verdict == "bounce":
            await self._settler.bounce(delivery)
        return verdict == "run"

    def _context(self, delivery: Delivery, envelope: Envelope) -> Context:
        return Context(
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
            self._settler.succeeded(delivery, skipped=True)
            return True
        self.stats.too_large += 1
        await self._settler.dead_letter(
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
                self._settler.succeeded(delivery, skipped=True)
                return None
            return envelope, self._decoders.decode(envelope, cls)
        except Exception as exc:  # DecodeError, or an Event's __post_init__ raising
            error = clip(exc.reason) if isinstance(exc, DecodeError) else describe(exc)
            error_type = "DecodeError" if isinstance(exc, DecodeError) else type(exc).__name__
            await self._settler.dead_letter(
                delivery, reason="undecodable", error_type=error_type, error=error
            )
            return None

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

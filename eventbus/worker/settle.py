"""What one group consumer holds, and every way it lets go: ack or commit, release for a
retry, dead-letter.

The `Settler` is the one owner of the entries a consumer holds (read or claimed, until
acknowledged, released or dead-lettered): the reader's entries are handed to it, the
lease keeper asks it what to extend, and only it adds or removes what is held.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from eventbus.idempotency import Transaction
from eventbus.scripts import SCRIPTS
from eventbus.wire import Arg, Pooled
from eventbus.worker.acks import AckBatcher
from eventbus.worker.claims import Claims
from eventbus.worker.deadletter import dlq_fields, traceback_tail
from eventbus.worker.delivery import Delivery
from eventbus.worker.describe import MAX_NAME_CHARS, clip, describe
from eventbus.worker.groups import Member
from eventbus.worker.ratelimit import RateLimited
from eventbus.worker.stats import GroupStats

if TYPE_CHECKING:
    from eventbus.handlers import HandlerSpec

log = logging.getLogger("eventbus.worker")


class Settler:
    """Holds one group consumer's entries and settles each of them.

    - success: the id joins the next batched XACK (or, for an idempotent handler, the
      next batched commit of its key); the entry is held until that call returns;
    - failure: released with ``XCLAIM ... IDLE <lease - backoff>``, claimable after the
      backoff; past ``max_attempts``, moved to the dead-letter stream;
    - shutdown: what is unfinished is released claimable at once.
    """

    def __init__(
        self,
        wire: Pooled,
        spec: HandlerSpec,
        member: Member,
        *,
        dlq_maxlen: int,
        max_event_bytes: int,
        stats: GroupStats,
        claims: Claims | None,
    ) -> None:
        self._owned: dict[str, Delivery] = {}  # what is held, by stream id
        # shared with the lease keeper: no heartbeat may land after a release and undo it
        self.lock = asyncio.Lock()
        self._wire = wire
        self._spec = spec
        self._lease_ms = int(spec.lease_s * 1000)
        self._member = member
        self._stats = stats
        self._claims = claims
        self._warn = RateLimited(log)
        # what a dead letter may copy, and how many the dead-letter stream keeps
        self._max_event_bytes = max_event_bytes
        self._dlq_maxlen = dlq_maxlen
        where, user = f"{member.key}/{member.group}", member.user
        self._acks: AckBatcher[str] = AckBatcher(self._xack, self._forget, where=where, user=user)
        self.commits: AckBatcher[tuple[str, str]] = AckBatcher(
            self._commit, self._forget_committed, where=where, user=user
        )

    # -- what is held ------------------------------------------------------------------

    def take(self, delivery: Delivery) -> None:
        """From now on the entry is ours to settle (and its lease is extended)."""
        self._owned[delivery.stream_id] = delivery

    def renew(self, stream_id: str, count: int) -> bool:
        """A reclaim returned an entry: True when we hold it still (our own lease lapsed
        while Redis was away), with its delivery count brought up to date."""
        held = self._owned.get(stream_id)
        if held is None:
            return False
        held.count = count
        return True

    def holds(self, delivery: Delivery) -> bool:
        return delivery.stream_id in self._owned

    def held_ids(self) -> list[str]:
        return list(self._owned)

    def held(self) -> list[Delivery]:
        return list(self._owned.values())

    def lease_lost(self, stream_id: str) -> None:
        """Another consumer claimed the entry: it is no longer ours."""
        held = self._owned.pop(stream_id, None)
        if held is not None and not held.done:
            log.warning(
                "%s: lost the lease of %s (another consumer claimed it); it may be handled twice",
                self._member.group,
                stream_id,
            )

    # -- success -----------------------------------------------------------------------

    def succeeded(
        self, delivery: Delivery, *, skipped: bool = False, duplicate: bool = False
    ) -> None:
        delivery.done = True
        if not (skipped or duplicate):
            self._stats.ok += 1
            if delivery.count > 1:
                self._stats.retried_ok += 1
        elif skipped:
            self._stats.skipped += 1
        marker = delivery.marker or delivery.unguarded
        if marker is not None and not duplicate:
            self.commits.add((delivery.stream_id, marker))
        else:
            self._acks.add(delivery.stream_id)

    async def commit_transaction(self, delivery: Delivery, tx: Transaction) -> None:
        """Apply the handler's transaction together with its commit, then settle."""
        assert self._claims is not None
        delivery.done = True
        outcome = await self._claims.commit_transaction(delivery, tx)
        if isinstance(outcome, Exception):  # nothing applied: a failed attempt
            delivery.done = False
            await self.failed(delivery, outcome)
        elif outcome == "retry":
            delivery.done = False
            await self.retry_later(delivery)
        else:
            self._owned.pop(delivery.stream_id, None)

    async def _xack(self, stream_ids: list[str]) -> None:
        await self._wire.call("XACK", self._member.key, self._member.group, *stream_ids)

    async def _commit(self, done: list[tuple[str, str]]) -> None:
        assert self._claims is not None
        await self._claims.commit(done)

    def _forget(self, stream_ids: list[str]) -> None:
        for stream_id in stream_ids:
            self._owned.pop(stream_id, None)

    def _forget_committed(self, done: list[tuple[str, str]]) -> None:
        self._forget([stream_id for stream_id, _ in done])

    # -- failure -----------------------------------------------------------------------

    async def failed(self, delivery: Delivery, exc: Exception) -> None:
        """A failed attempt: released for a retry after the backoff, or dead-lettered
        when it was the last one."""
        if self._claims is not None:
            if delivery.overrun is not None:
                self._claims.hold(delivery)  # its thread still runs: keep the key claimed
            else:
                await self._claims.drop(delivery)
        error = describe(exc, self._spec.timeout_s)
        if delivery.count >= self._spec.max_attempts:
            log.error(
                "%s: %s failed on attempt %d of %d, dead-lettering: %s",
                self._member.group,
                delivery.stream_id,
                delivery.count,
                self._spec.max_attempts,
                error,
            )
            await self.dead_letter(
                delivery,
                reason="failed",
                error_type=type(exc).__name__,
                error=error,
                tb=traceback_tail(exc),
            )
            return
        self._stats.errors += 1  # a failed attempt to retry (a last one counts as dead)
        idle_ms = self._retry_idle_ms(delivery)
        log.warning(
            "%s: %s failed on attempt %d of %d, retrying in %.1fs: %s",
            self._member.group,
            delivery.stream_id,
            delivery.count,
            self._spec.max_attempts,
            (self._lease_ms - idle_ms) / 1000,
            error,
        )
        await self._release([delivery], idle_ms=idle_ms)

    async def retry_later(self, delivery: Delivery) -> None:
        """Release for a retry after the backoff, counting the attempt."""
        await self._release([delivery], idle_ms=self._retry_idle_ms(delivery))

    async def bounce(self, delivery: Delivery) -> None:
        """Retry later without spending an attempt (the handler did not run)."""
        await self._release([delivery], idle_ms=self._retry_idle_ms(delivery), restore_count=True)

    async def rescue(self, delivery: Delivery) -> None:
        """After an internal error: release for a retry, unless already settled."""
        if delivery.stream_id in self._owned and not delivery.done:
            if self._claims is not None:
                await self._claims.drop(delivery)
            await self.retry_later(delivery)

    def _retry_idle_ms(self, delivery: Delivery) -> int:
        delay = min(self._spec.backoff.delay(delivery.count), self._spec.lease_s)
        return self._lease_ms - int(delay * 1000)

    async def _release(
        self, deliveries: list[Delivery], *, idle_ms: int, restore_count: bool = False
    ) -> int:
        """Hand entries back to the pending list, claimable when idle reaches the lease."""
        args: list[Arg] = [self._member.group, self._member.consumer, max(0, idle_ms)]
        for d in deliveries:
            args += [d.stream_id, max(0, d.count - 1) if restore_count else -1]
        async with self.lock:  # no heartbeat may land after this and undo it
            for d in deliveries:
                self._owned.pop(d.stream_id, None)
            try:
                return int(await self._wire.script(SCRIPTS.release, [self._member.key], args))
            except RedisError as exc:
                # Still pending in Redis: reclaimed once its lease runs out. Nothing is lost.
                self._warn.warning(
                    "release",
                    "%s: release failed (%s); entries return after the lease",
                    self._member.group,
                    describe(exc),
                )
                return 0

    async def dead_letter(
        self,
        delivery: Delivery,
        *,
        reason: str,
        error_type: str,
        error: str,
        tb: str = "",
    ) -> None:
        """Move the entry to the dead-letter stream (and ack it), in one script."""
        fields = dlq_fields(
            delivery.fields,
            group=self._member.group,
            handler=self._spec.name,
            stream_id=delivery.stream_id,
            reason=reason,
            error_type=error_type,
            error=error,
            tb=tb,
            attempts=delivery.count,
            consumer=self._member.consumer,
            max_field_bytes=self._max_event_bytes,
        )
        head: list[Arg] = [
            self._member.group,
            self._member.consumer,
            delivery.stream_id,
            self._dlq_maxlen,
        ]
        try:
            moved = await self._wire.script(
                SCRIPTS.dead_letter, [self._member.key, self._member.dlq_key], head + fields
            )
        except RedisError as exc:
            # Still pending: reclaimed after the lease, and dead-lettered then.
            self._warn.error(
                "dead-letter",
                "%s: dead-lettering %s failed: %s",
                self._member.group,
                delivery.stream_id,
                describe(exc),
            )
            moved = None
        if moved:
            self._moved(delivery, reason, error, cut=int(moved[1]))
        self._owned.pop(delivery.stream_id, None)

    def _moved(self, delivery: Delivery, reason: str, error: str, *, cut: int) -> None:
        self._stats.dead += 1
        self._warn.warning(
            f"dead:{reason}",
            "%s: %s moved to %s (%s: %s)",
            self._member.group,
            delivery.stream_id,
            self._member.dlq_key,
            reason,
            clip(error, MAX_NAME_CHARS),
        )
        if cut > 0:
            self._stats.dlq_trimmed += cut
            self._warn.warning(
                "dlq-cap",
                "%s: %s is at its cap (dlq_maxlen=%d): its %d oldest dead letters were "
                "dropped; redrive or purge dead letters, or raise dlq_maxlen",
                self._member.group,
                self._member.dlq_key,
                self._dlq_maxlen,
                cut,
            )

    # -- shutdown ----------------------------------------------------------------------

    async def release_unfinished(self) -> None:
        """Release what no handler finished, claimable at once; the interrupted delivery
        does not count as an attempt."""
        unfinished = [d for d in self._owned.values() if not d.done]
        if not unfinished:
            return
        if self._claims is not None and self._spec.is_async:
            # so whoever takes them over can claim their keys at once (sync handlers'
            # threads may still run: their claims expire with the lease instead)
            await asyncio.gather(*(self._claims.drop(d) for d in unfinished))
        released = await self._release(unfinished, idle_ms=self._lease_ms, restore_count=True)
        log.info("%s: released %d unfinished entries on shutdown", self._member.group, released)

    async def flush(self) -> None:
        """Send the acks and commits still waiting (for a few seconds at most)."""
        for batcher in (self._acks, self.commits):
            if not await batcher.flush(timeout=5):
                log.warning(
                    "%s: %d acks could not be flushed; those entries will be redelivered",
                    self._member.group,
                    batcher.backlog,
                )
            await batcher.close()

"""Idempotent deliveries: claiming a key before the handler, committing after it.

The group consumer calls in here for handlers declared ``idempotent=True``; the markers
and scripts themselves are `eventbus.idempotency`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Literal

from redis.exceptions import DataError, RedisError, ResponseError

from eventbus.envelope import Envelope
from eventbus.idempotency import IdempotencyGuard, Transaction
from eventbus.permissions import explain_noperm, is_noperm
from eventbus.worker.delivery import Delivery
from eventbus.worker.describe import clip_repr, describe
from eventbus.worker.ratelimit import RateLimited
from eventbus.worker.stats import GroupStats

log = logging.getLogger("eventbus.worker")

Verdict = Literal["run", "duplicate", "bounce"]
Committed = Literal["settled", "retry"] | Exception


class Claims:
    """Claim, extend, commit or drop the idempotency markers of one group's deliveries.

    It settles nothing itself: `claim` and `commit_transaction` say what should happen
    to the entry, and the group's `Settler` does it.
    """

    def __init__(
        self,
        guard: IdempotencyGuard,
        *,
        group: str,
        stats: GroupStats,
        user: str | None = None,
    ) -> None:
        self.guard = guard
        self._group = group
        self._stats = stats
        self.user = user
        self._warn = RateLimited(log)
        # deliveries whose sync handler outlived its timeout: their claims are kept (and
        # extended) until the thread returns, so no retry runs beside it
        self._held: dict[int, Delivery] = {}

    async def claim(self, delivery: Delivery, envelope: Envelope) -> Verdict:
        """Claim the delivery's idempotency key: "run" it, or it is a "duplicate" of a key
        already handled (ack it), or "bounce" it (retry later without spending an
        attempt: another delivery holds the key, or the store cannot say)."""
        key = envelope.key or envelope.stream_id
        marker = self.guard.marker(key)
        token = self.guard.token(delivery.stream_id, delivery.count)
        try:
            verdict = await self.guard.begin(marker, token)
        except (RedisError, OSError) as exc:
            if is_noperm(exc):
                # a configuration mistake, not an outage: never run unguarded for it
                self._stats.store_errors += 1
                self._warn.error(
                    "noperm",
                    "%s; %s retried later, not run",
                    explain_noperm(
                        exc,
                        user=self.user,
                        what=f"{self._group}: claiming an idempotency key (GET, SET)",
                    ),
                    delivery.stream_id,
                )
                return "bounce"
            self._stats.store_errors += 1
            if self.guard.options.on_store_error == "fail_open":
                self._warn.warning(
                    "unreachable",
                    "%s: idempotency store unreachable (%s); running %s unguarded",
                    self._group,
                    describe(exc),
                    delivery.stream_id,
                )
                # its commit still checks the key: a transaction is applied once. With
                # the attempted token: if the begin ran and only its reply was lost, the
                # key is ours, not another delivery's
                delivery.unguarded, delivery.token = marker, token
                return "run"
            self._warn.warning(
                "unreachable",
                "%s: idempotency store unreachable (%s); %s retried later",
                self._group,
                describe(exc),
                delivery.stream_id,
            )
            return "bounce"
        if verdict == "done":
            self._stats.duplicates += 1
            log.info(
                "%s: %s is a duplicate of key %s, already handled",
                self._group,
                delivery.stream_id,
                clip_repr(key),
            )
            return "duplicate"
        if verdict == "busy":
            self._stats.busy += 1
            return "bounce"
        delivery.marker, delivery.token = marker, token
        return "run"

    def tx_refusal(self, delivery: Delivery) -> str | None:
        """Why this delivery's handler may not use ctx.transaction(), or None."""
        if not self.guard.same_store:
            return "its idempotency store is a separate Redis (idempotency_store=...)"
        return None

    async def commit_transaction(self, delivery: Delivery, tx: Transaction) -> Committed:
        """Apply the handler's transaction with the commit of its key, and say what is left
        to do: "settled" (the script acked the entry, or it was left to be settled on
        redelivery), "retry" (it ran unguarded and someone else holds the key now), or the
        error that rejected it with nothing applied (a failed attempt)."""
        marker = delivery.marker or delivery.unguarded
        assert marker is not None
        token = delivery.token
        try:
            outcome = await self.guard.commit_transaction(delivery.stream_id, marker, token, tx)
        except (ResponseError, DataError) as exc:
            # rejected with nothing applied (unknown command, wrong arity, no permission,
            # a marker of the wrong type)
            return exc
        except (RedisError, OSError) as exc:
            # applied or not, exactly once: either the marker says done, or our claim
            # stays and expires with the lease and the entry is handled again
            log.warning(
                "%s: commit of %s failed (%s); it will be settled on redelivery",
                self._group,
                delivery.stream_id,
                describe(exc),
            )
            return "settled"
        if outcome.verdict == "applied":
            self._stats.ok += 1
            if delivery.count > 1:
                self._stats.retried_ok += 1
        elif outcome.verdict == "done":
            # another delivery of the key finished first (a takeover while this one ran
            # unguarded or past its lease): its transaction stands, this one's is dropped
            self._stats.duplicates += 1
            log.warning(
                "%s: %s was handled by another delivery of its key while this one ran; "
                "this run's transaction was not applied",
                self._group,
                delivery.stream_id,
            )
        else:
            self._stats.lost += 1
            log.warning(
                "%s: %s was claimed by another consumer before its commit; its "
                "transaction was not applied",
                self._group,
                delivery.stream_id,
            )
            if delivery.marker is None:
                # ran unguarded and someone holds the key now: retry (if still ours)
                # after the backoff, when the other has finished or given up
                return "retry"
        return "settled"

    async def extend(self, owned: Iterable[Delivery]) -> None:
        """Extend the claims of `owned` (done ones too: a commit may still be on its way,
        retried by the batcher) and of the deliveries held past their timeout."""
        holders = [*owned, *self._held.values()]
        claims = [(d.marker, d.token) for d in holders if d.marker]
        await self.guard.extend(claims)

    def hold(self, delivery: Delivery) -> None:
        """Keep the claim of a delivery whose handler thread still runs past its timeout."""
        self._held[id(delivery)] = delivery

    async def release_hold(self, delivery: Delivery) -> None:
        """The thread returned: the claim can go (the retry may claim the key)."""
        if self._held.pop(id(delivery), None) is not None:
            await self.drop(delivery)

    async def drop(self, delivery: Delivery) -> None:
        """After a failure: give up our claim so a retry can take it."""
        if delivery.marker is None:
            return
        marker, delivery.marker = delivery.marker, None
        try:
            await self.guard.abort(marker, delivery.token)
        except (RedisError, OSError) as exc:  # it expires with the lease anyway
            log.debug("%s: could not drop the claim on %s: %s", self._group, marker, exc)

    async def commit(self, done: list[tuple[str, str]]) -> None:
        await self.guard.commit(done)

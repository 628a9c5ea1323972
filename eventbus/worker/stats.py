"""In-process counters of one group consumer (Prometheus metrics build on the same events)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from eventbus.histogram import AGE_BUCKETS, Histogram


@dataclass
class GroupStats:
    ok: int = 0  # handled successfully (including after retries)
    retried_ok: int = 0  # of those, succeeded on a later attempt
    errors: int = 0  # failed attempts that will be retried (a last failure counts as dead)
    dead: int = 0  # moved to the dead-letter stream
    skipped: int = 0  # acked without running (another group's redelivery, other types)
    reclaimed: int = 0  # entries claimed by XAUTOCLAIM (retries and crash recovery)
    duplicates: int = 0  # idempotent: the key was handled before; acked without running
    busy: int = 0  # idempotent: another delivery of the key was in flight; retried later
    store_errors: int = 0  # idempotent: the idempotency store could not be reached
    lost: int = 0  # transactions not applied: another consumer had claimed the entry
    too_large: int = 0  # entries over the size limit: dead-lettered without decoding
    dlq_trimmed: int = 0  # dead letters the dead-letter stream's cap (dlq_maxlen) cut
    duration: Histogram = field(default_factory=Histogram)  # handler run time
    age: Histogram = field(default_factory=lambda: Histogram(AGE_BUCKETS))  # publish -> start

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if isinstance(v, int)}

"""What a dead-letter entry records besides the original fields."""

from __future__ import annotations

import traceback

from eventbus.envelope import now_rfc3339
from eventbus.wire import Arg

TRACEBACK_TAIL = 2000


def describe(exc: BaseException, timeout_s: float | None = None) -> str:
    """A one-line description of a failure; never raises (an exception's __str__ may)."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    if isinstance(exc, TimeoutError) and timeout_s is not None and not text:
        return f"handler exceeded its timeout of {timeout_s:g}s"
    return text or type(exc).__name__


def traceback_tail(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))[-TRACEBACK_TAIL:]
    except Exception:
        return f"{type(exc).__name__} (traceback unavailable)"


def dlq_fields(
    original: list[bytes],
    *,
    group: str,
    handler: str,
    stream_id: str,
    reason: str,
    error_type: str,
    error: str,
    tb: str,
    attempts: int,
    consumer: str,
) -> list[Arg]:
    """The original fields (so the entry can be redelivered as it was) plus ``dlq_*``."""
    fields: list[Arg] = list(original)
    fields += [
        "dlq_group", group,
        "dlq_handler", handler,
        "dlq_stream_id", stream_id,
        "dlq_reason", reason,
        "dlq_error_type", error_type,
        "dlq_error", error,
        "dlq_traceback", tb,
        "dlq_attempts", attempts,
        "dlq_consumer", consumer,
        "dlq_time", now_rfc3339(),
    ]  # fmt: skip
    return fields

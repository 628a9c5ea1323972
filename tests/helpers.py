"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from eventbus import Context, EventBus


class Seen:
    """Records what handlers got, in arrival order."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, Context]] = []
        self.calls: Counter[Any] = Counter()

    def add(self, value: Any, ctx: Context) -> None:
        self.items.append((value, ctx))

    def values(self) -> list[Any]:
        return [v for v, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)


async def group_state(bus: EventBus, stream: str, group: str) -> dict[str, Any]:
    for info in await bus.redis.xinfo_groups(bus.keys.stream(stream)):
        if info["name"].decode() == group:
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in info.items()}
    raise AssertionError(f"no group {group}")


async def pending_count(bus: EventBus, stream: str, group: str) -> int:
    summary = await bus.redis.xpending(bus.keys.stream(stream), group)
    return int(summary["pending"])


async def no_pending(bus: EventBus, stream: str, group: str) -> bool:
    return await pending_count(bus, stream, group) == 0


async def dlq_entries(bus: EventBus, stream: str) -> list[dict[str, str]]:
    entries = await bus.redis.xrange(bus.keys.dlq(stream))
    return [
        {k.decode(): v.decode(errors="replace") for k, v in fields.items()} for _, fields in entries
    ]


async def redis_version(bus: EventBus) -> tuple[int, ...]:
    info = await bus.redis.info("server")
    return tuple(int(p) for p in str(info["redis_version"]).split("."))


async def settle() -> None:
    """Let already-scheduled callbacks run (not a wait for a condition)."""
    for _ in range(3):
        await asyncio.sleep(0)

"""Read the dead-letter stream with plain redis-py: every field is readable as is.

python docs/examples/inspect_dead_letters.py redis://localhost:6379/0 notes demo
"""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis

from eventbus.keys import Keys


async def dead_letters(url: str, stream: str, prefix: str = "eb") -> list[dict[str, str]]:
    client = Redis.from_url(url)
    try:
        entries = await client.xrange(Keys(prefix).dlq(stream))
    finally:
        await client.aclose()
    return [{k.decode(): v.decode(errors="replace") for k, v in f.items()} for _, f in entries]


async def main(url: str, stream: str, prefix: str) -> None:
    for dead in await dead_letters(url, stream, prefix):
        print(
            f"{dead['dlq_stream_id']} {dead['type']} group={dead['dlq_group']} "
            f"attempts={dead['dlq_attempts']} {dead['dlq_reason']}: {dead['dlq_error']}"
        )


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

"""The sample app's state, kept in Redis under ``<prefix>:app:``."""

from __future__ import annotations

import re
import time

from redis.asyncio import Redis

from handlers.events import NoteCreated

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


class NoteStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.base = f"{prefix}:app"

    def note_key(self, note_id: str) -> str:
        return f"{self.base}:note:{note_id}"

    def index_key(self, word: str) -> str:
        return f"{self.base}:idx:{word}"

    @property
    def by_time_key(self) -> str:
        return f"{self.base}:notes-by-time"

    async def save(self, note: NoteCreated) -> None:
        created = note.created_at if note.created_at is not None else time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            self.note_key(note.note_id),
            mapping={"author": note.author, "title": note.title, "body": note.body,
                     "created_at": created},
        )  # fmt: skip
        pipe.zadd(self.by_time_key, {note.note_id: created})
        await pipe.execute()

    async def delete(self, note_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.note_key(note_id))
        pipe.zrem(self.by_time_key, note_id)
        await pipe.execute()

    async def older_than(self, cutoff: float, limit: int = 1000) -> list[str]:
        ids: list[bytes] = await self.redis.zrangebyscore(  # type: ignore[assignment]
            self.by_time_key, "-inf", cutoff, 0, limit
        )
        return [i.decode() for i in ids]

    async def exists(self, note_id: str) -> bool:
        return bool(await self.redis.exists(self.note_key(note_id)))

    async def index(self, note: NoteCreated) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for word in words(f"{note.title} {note.body}"):
            pipe.sadd(self.index_key(word), note.note_id)
        await pipe.execute()

    async def search(self, word: str) -> set[str]:
        members: set[bytes] = await self.redis.smembers(self.index_key(word.lower()))  # type: ignore[assignment]
        return {m.decode() for m in members}

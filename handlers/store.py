"""The sample app's state, kept in Redis under ``<prefix>:app:``."""

from __future__ import annotations

import re

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

    async def save(self, note: NoteCreated) -> None:
        await self.redis.hset(
            self.note_key(note.note_id),
            mapping={"author": note.author, "title": note.title, "body": note.body},
        )

    async def delete(self, note_id: str) -> None:
        await self.redis.delete(self.note_key(note_id))

    async def index(self, note: NoteCreated) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for word in words(f"{note.title} {note.body}"):
            pipe.sadd(self.index_key(word), note.note_id)
        await pipe.execute()

    async def search(self, word: str) -> set[str]:
        members: set[bytes] = await self.redis.smembers(self.index_key(word.lower()))  # type: ignore[assignment]
        return {m.decode() for m in members}

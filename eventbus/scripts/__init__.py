"""Lua scripts, one ``.lua`` file each (their header comments document KEYS/ARGV)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def source(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class Scripts:
    """The scripts registered on one client (EVALSHA with a NOSCRIPT fallback)."""

    heartbeat: AsyncScript
    release: AsyncScript
    dead_letter: AsyncScript
    reclaim: AsyncScript
    delete_consumer: AsyncScript

    @classmethod
    def register(cls, client: Redis) -> Scripts:
        loaded: dict[str, Any] = {
            name: client.register_script(source(name))
            for name in ("heartbeat", "release", "dead_letter", "reclaim", "delete_consumer")
        }
        return cls(**loaded)

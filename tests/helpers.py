"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from eventbus import Context, EventBus

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    drop: tuple[str, ...] = ("EVENTBUS_REDIS_URL",),
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the ``eventbus`` command as a process (for exit codes and stderr) from the
    repository, in this environment without the variables whose names start with one of
    `drop` (by default the Redis URL a user may have set), with `env` added."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "eventbus.cli.main", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=stdin,
    )


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


async def all_settled(bus: EventBus, stream: str, group: str) -> bool:
    """Every entry of the stream delivered to the group, and none of them pending: unlike
    `no_pending` alone, not already true before the group has read what was published."""
    info = await bus.redis.xinfo_stream(bus.keys.stream(stream))
    state = await group_state(bus, stream, group)
    last_id = info["last-generated-id"]
    return state["pending"] == 0 and state["last-delivered-id"] == last_id.decode()


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


@contextlib.asynccontextmanager
async def reply_cutting_proxy(
    upstream_port: int, *, marker: bytes, keep_replies: int
) -> AsyncIterator[int]:
    """A TCP proxy to a Redis server that, once a request containing `marker` passes,
    lets only `keep_replies` single-line-pair replies (e.g. XADD ids) through and then
    drops the connection: the server ran everything, the client lost the rest."""

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port)
        cutting = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if marker in data:
                    cutting.set()
                up_w.write(data)
                await up_w.drain()

        async def downstream() -> None:
            lines_left = 2 * keep_replies
            while data := await up_r.read(65536):
                if not cutting.is_set():
                    client_w.write(data)
                    await client_w.drain()
                    continue
                lines = data.splitlines(keepends=True)
                client_w.write(b"".join(lines[:lines_left]))
                await client_w.drain()
                lines_left -= min(lines_left, len(lines))
                if lines_left == 0:
                    client_w.transport.abort()
                    return

        try:
            await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        finally:
            for writer in (up_w, client_w):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


class FaultProxy:
    """A TCP proxy to a Redis server that can fail on cue: `cut_on(marker)` drops the
    connection whose request contains `marker` (before Redis sees it) and then refuses
    every connection until `heal()`: a network partition that starts at one command.
    With ``forward=True`` the request reaches Redis and only its reply is lost (the
    command ran; the client cannot know), and later connections pass."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._marker: bytes | None = None
        self._forward = False
        self._down = False
        self.tripped = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    def cut_on(self, marker: bytes, *, forward: bool = False) -> None:
        self._marker = marker
        self._forward = forward

    def heal(self) -> None:
        self._down = False
        self._marker = None

    def _trip(self) -> None:
        self._down = True
        self.tripped.set()
        for writer in list(self._writers):
            writer.transport.abort()

    def _verdict(self, data: bytes) -> str:
        """What to do with a request: "pass", "cut" or "lose-replies" (forward: true)."""
        hit = self._marker is not None and self._marker in data
        if hit and self._forward:
            self._marker = None  # once
            self.tripped.set()
            return "lose-replies"
        return "cut" if self._down or hit else "pass"

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._down:
            client_w.transport.abort()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, up_w}
        replies_lost = asyncio.Event()
        try:
            await asyncio.gather(
                self._upstream(client_r, up_w, replies_lost),
                self._downstream(up_r, client_w, replies_lost),
                return_exceptions=True,
            )
        finally:
            for writer in (up_w, client_w):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _upstream(
        self, client_r: asyncio.StreamReader, up_w: asyncio.StreamWriter, lost: asyncio.Event
    ) -> None:
        while data := await client_r.read(65536):
            verdict = self._verdict(data)
            if verdict == "cut":
                self._trip()
                return
            if verdict == "lose-replies":
                lost.set()
            up_w.write(data)
            await up_w.drain()

    async def _downstream(
        self, up_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, lost: asyncio.Event
    ) -> None:
        while data := await up_r.read(65536):
            if self._down:
                return
            if lost.is_set():
                await asyncio.sleep(0.05)  # let Redis run it before the cut lands
                client_w.transport.abort()
                return
            client_w.write(data)
            await client_w.drain()

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

"""Shared fixtures: a real Redis per session (see eventbus.testing), a prefix per test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from eventbus import EventBus
from eventbus.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def redis_url(eventbus_redis_url: str) -> str:
    return eventbus_redis_url


@pytest_asyncio.fixture
async def bus(eventbus_redis_url: str, eventbus_prefix: str) -> AsyncIterator[EventBus]:
    b = EventBus.from_url(eventbus_redis_url, service="test", prefix=eventbus_prefix)
    yield b
    await b.aclose()


@pytest_asyncio.fixture
async def make_bus() -> AsyncIterator[Callable[..., EventBus]]:
    """Extra buses (e.g. on a server the test restarts); closed after the test."""
    made: list[EventBus] = []

    def make(url: str, prefix: str, service: str = "test") -> EventBus:
        b = EventBus.from_url(url, service=service, prefix=prefix)
        made.append(b)
        return b

    yield make
    for b in made:
        await b.aclose()


@pytest.fixture
def aof_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A server of this test's own, persisting every write, to kill and restart."""
    return redis_server_factory(appendonly=True)


class Processes:
    """Subprocesses of a test (workers to SIGKILL); all killed at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def eventbus(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventbus.cli.main", *args],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.kill_all()


def output_of(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    return proc.stdout.read().decode(errors="replace")


def pytest_collection_modifyitems(items: list[Any]) -> None:
    # tests with real processes are the slow ones; keep them last
    items.sort(key=lambda item: item.path.name in ("test_faults.py", "test_schedule_faults.py"))

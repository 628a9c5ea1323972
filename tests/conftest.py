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
    """Extra buses (e.g. on a server the test restarts, or with other options: any of
    `EventBus.from_url`'s as keywords); closed after the test."""
    made: list[EventBus] = []

    def make(url: str, prefix: str, service: str = "test", **options: Any) -> EventBus:
        b = EventBus.from_url(url, service=service, prefix=prefix, **options)
        made.append(b)
        return b

    yield make
    for b in made:
        await b.aclose()


@pytest_asyncio.fixture
async def own_bus(
    redis_server_factory: Callable[..., RedisServer], eventbus_prefix: str
) -> AsyncIterator[EventBus]:
    """A bus on a server of this test's own, for a test that flushes the script cache or
    counts commands server-wide: on a server that others share (EVENTBUS_TEST_REDIS_URL,
    one for every pytest-xdist worker) it would disturb them, and they it."""
    server = redis_server_factory()
    b = EventBus.from_url(server.url, service="test", prefix=eventbus_prefix)
    yield b
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


# The tests with real processes and real-time waits, the longest first (see docs/testing.md)
LONG_RUNNING = (
    "test_soak.py",
    "test_wire_cluster.py",
    "test_testing_cluster.py",
    "test_schedule_faults.py",
    "test_testing_sentinel.py",
    "test_faults.py",
    "test_scheduler.py",
)


def _rank(item: pytest.Item) -> int:
    name = item.path.name
    return LONG_RUNNING.index(name) if name in LONG_RUNNING else len(LONG_RUNNING)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # serially: the slow ones last, for quick feedback
        items.sort(key=lambda item: _rank(item) < len(LONG_RUNNING))
        return
    # a pytest-xdist worker (each collects the same, in the same order): the long ones
    # first, so that none of them ends the run alone; xdist hands tests out one by one in
    # this order (--maxschedchunk 1). A worker takes its next test before it runs one
    # (pytest needs it for teardown), so the longest one's worker is given a quick one
    # next (the last), not the second longest to wait behind it.
    items.sort(key=_rank)
    if items and _rank(items[0]) == 0:
        items.insert(1, items.pop())


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # the addopts in pyproject.toml run the suite on pytest-xdist; with `-p no:xdist` (a
    # plain serial run, for pdb) accept its options, and ignore them
    if not pluginmanager.has_plugin("xdist"):
        group = parser.getgroup("xdist options, ignored under -p no:xdist")
        group.addoption("--numprocesses", dest="numprocesses", default=None)
        group.addoption("--dist", dest="dist", default="no")
        group.addoption("--maxschedchunk", dest="maxschedchunk", default=None)

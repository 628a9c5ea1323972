"""pytest fixtures (registered through the ``pytest11`` entry point).

- ``eventbus_redis_url`` (session): a real Redis for the session (see `test_redis_url`).
- ``eventbus_prefix``: a fresh key prefix per test.
- ``eventbus_bus``: an `EventBus` on that Redis and prefix, closed after the test
  (needs pytest-asyncio; a pytest-asyncio fixture, so it works in its default strict
  mode, for tests marked ``@pytest.mark.asyncio``).
- ``redis_server_factory``: start extra `RedisServer`s a test may kill and restart.
- ``redis_sentinel_factory``: start `SentinelSetup`s (1 master, 1 replica, 3 sentinels).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

import pytest

from eventbus.bus import EventBus
from eventbus.testing.cluster import RedisClusterSetup
from eventbus.testing.helpers import unique_prefix
from eventbus.testing.sentinel import SentinelSetup
from eventbus.testing.server import RedisServer, test_redis_url


@pytest.fixture(scope="session")
def eventbus_redis_url() -> Iterator[str]:
    with test_redis_url() as url:
        yield url


@pytest.fixture
def eventbus_prefix() -> str:
    return unique_prefix()


class _Startable(Protocol):
    def start(self) -> Any: ...

    def close(self) -> None: ...


def _factory(kind: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """A `make(**kwargs)` that builds and starts `kind`; whatever it made is closed
    after the test, even what failed to start."""
    made: list[_Startable] = []

    def make(**kwargs: Any) -> Any:
        thing = kind(**kwargs)
        made.append(thing)
        return thing.start()

    yield make
    for thing in made:
        thing.close()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start extra `RedisServer`s (to kill, stop and restart)."""
    yield from _factory(RedisServer)


@pytest.fixture
def redis_cluster_factory() -> Iterator[Callable[..., RedisClusterSetup]]:
    """Start a real local Redis Cluster (`RedisClusterSetup`: 3 masters and 3 replicas
    by default)."""
    yield from _factory(RedisClusterSetup)


@pytest.fixture
def redis_sentinel_factory() -> Iterator[Callable[..., SentinelSetup]]:
    """Start a real local Sentinel setup (`SentinelSetup`: a master, a replica, three
    sentinels)."""
    yield from _factory(SentinelSetup)


async def _bus(eventbus_redis_url: str, eventbus_prefix: str) -> AsyncIterator[EventBus]:
    bus = EventBus.from_url(eventbus_redis_url, service="test", prefix=eventbus_prefix)
    try:
        yield bus
    finally:
        await bus.aclose()


def _needs_pytest_asyncio() -> None:
    pytest.fail(
        "the eventbus_bus fixture needs pytest-asyncio: pip install pytest-asyncio "
        "(see eventbus's docs/testing.md)",
        pytrace=False,
    )


# a pytest-asyncio fixture, so it works in pytest-asyncio's default strict mode; without
# pytest-asyncio, a fixture that says to install it
eventbus_bus: object
try:
    import pytest_asyncio
except ImportError:
    eventbus_bus = pytest.fixture(_needs_pytest_asyncio, name="eventbus_bus")
else:
    eventbus_bus = pytest_asyncio.fixture(_bus, name="eventbus_bus")

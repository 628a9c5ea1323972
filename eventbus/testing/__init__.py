"""Test helpers for eventbus users (and eventbus itself): a real Redis, never a mock.

- `RedisServer`: a throwaway ``redis-server`` on a free port in a temp dir, that a
  test can stop, kill (SIGKILL) and restart on the same port and data.
- `test_redis_url()`: ``$EVENTBUS_TEST_REDIS_URL`` if set, else a testcontainers Redis
  when a Docker engine answers, else a `RedisServer`.
- `wait_for()`: await a condition instead of sleeping.
- `running_worker()`: run a `Worker` in the background for the duration of a block.

With the package installed, pytest also gets the fixtures of `eventbus.testing.plugin`.
"""

from eventbus.testing.helpers import running_worker, unique_prefix, wait_for
from eventbus.testing.server import RedisServer, docker_available, test_redis_url

__all__ = [
    "RedisServer",
    "docker_available",
    "running_worker",
    "test_redis_url",
    "unique_prefix",
    "wait_for",
]

"""eventbus.testing.sentinel with real processes: 1 master, 1 replica, 3 sentinels that
start in sync, replicate, fail over when the master is SIGKILLed, and leave nothing
behind when closed."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
import redis

from eventbus.errors import EmbeddedServerError
from eventbus.testing.sentinel import SentinelSetup
from eventbus.testing.server import _held

Factory = Callable[..., SentinelSetup]


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def client(port: int) -> redis.Redis:
    return redis.Redis(port=port, decode_responses=True, socket_timeout=2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(60)
def test_the_setup_starts_with_the_replica_in_sync(redis_sentinel_factory: Factory) -> None:
    setup = redis_sentinel_factory(master_name="orders")
    master, replica = setup.servers
    assert setup.master_name == "orders"
    assert setup.master_address() == ("127.0.0.1", master.port)
    assert len({port for _, port in setup.sentinels}) == 3
    for host, port in setup.sentinels:
        with redis.Redis(host=host, port=port, decode_responses=True) as sentinel:
            reply = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "orders")
            assert list(reply) == ["127.0.0.1", str(master.port)]
    with client(replica.port) as c:
        info = c.info("replication")
    assert info["role"] == "slave"
    assert info["master_link_status"] == "up"


@pytest.mark.timeout(60)
def test_a_write_to_the_master_is_read_from_the_replica(redis_sentinel_factory: Factory) -> None:
    setup = redis_sentinel_factory()
    master, replica = setup.servers
    with client(master.port) as m, client(replica.port) as r:
        m.set("greeting", "hello")
        wait_until(lambda: r.get("greeting") == "hello")


@pytest.mark.timeout(90)
def test_killing_the_master_promotes_the_replica(redis_sentinel_factory: Factory) -> None:
    setup = redis_sentinel_factory()
    old_master, replica = setup.servers
    with client(old_master.port) as m:
        m.set("before", "1")
        assert m.wait(1, 5000) == 1  # the replica has it
    started = time.monotonic()
    killed = setup.kill_master()
    assert killed == ("127.0.0.1", old_master.port)
    assert old_master.process is None
    new = setup.wait_for_failover(timeout=60)
    assert time.monotonic() - started < 60
    assert new != killed
    assert new == ("127.0.0.1", replica.port)
    assert setup.master_address() == new
    with client(new[1]) as c:
        assert c.execute_command("ROLE")[0] == "master"
        assert c.get("before") == "1"
        c.set("after", "2")
        assert c.get("after") == "2"


@pytest.mark.timeout(60)
def test_close_leaves_nothing_behind() -> None:
    with SentinelSetup() as setup:
        pids = setup.pids()
        assert len(pids) == 5
        assert all(alive(pid) for pid in pids)
        processes = [*setup.servers, *setup.sentinel_servers]
        dirs = [p.data_dir for p in processes]
        ports = [p.port for p in processes]
        assert all(port in _held for port in ports)
    assert not [pid for pid in pids if alive(pid)]
    assert setup.pids() == []
    assert not [d for d in dirs if d.exists()]
    assert not [port for port in ports if port in _held]
    setup.close()  # idempotent


@pytest.mark.timeout(30)
def test_a_setup_that_fails_to_start_is_cleaned_up() -> None:
    setup = SentinelSetup(binary="/bin/false")
    with pytest.raises(EmbeddedServerError, match="did not start"):
        setup.start(timeout=5)
    dirs = [server.data_dir for server in setup.servers]
    setup.close()
    assert dirs
    assert not [d for d in dirs if d.exists()]
    assert setup.pids() == []

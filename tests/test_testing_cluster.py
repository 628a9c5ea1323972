"""The local Redis Cluster of eventbus.testing (real processes), and our key slots
checked against the servers' own (CLUSTER KEYSLOT)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator

import pytest

from eventbus.keys import Keys
from eventbus.testing import wait_for
from eventbus.testing.cluster import RedisClusterSetup, node_command
from eventbus.wire import ConnectionOptions, SyncPool, pack
from eventbus.wire.errors import Redirected
from eventbus.wire.slots import SLOTS, crc16, hash_tag, key_slot

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSetup]:
    with RedisClusterSetup() as made:
        yield made


def test_crc16_and_hash_tags() -> None:
    assert crc16(b"123456789") == 0x31C3  # CRC-16/XMODEM's check value
    assert hash_tag(b"eb:{orders}:dlq") == b"orders"
    assert hash_tag(b"foo{}{bar}") == b"foo{}{bar}"  # an empty tag: the whole key
    assert hash_tag(b"foo{{bar}}") == b"{bar"
    assert hash_tag(b"foo{bar}{zap}") == b"bar"
    assert key_slot("eb:{orders}") == key_slot("eb:{orders}:dlq") == key_slot(b"orders")


def test_the_cluster_serves_every_slot_with_replicas_in_sync(cluster: RedisClusterSetup) -> None:
    assert cluster.health() == ""
    ranges = cluster.slot_ranges()
    assert sum(end - start + 1 for start, end, _ in ranges) == SLOTS
    assert len(cluster.masters()) == 3
    assert len(cluster.replicas()) == 3


def test_our_key_slots_are_the_servers(cluster: RedisClusterSetup) -> None:
    keys = Keys("eb")
    rng = random.Random(11)
    names: list[bytes | str] = [keys.stream("orders"), keys.dlq("orders"), "plain", ""]
    names += [os.urandom(rng.randint(1, 40)) for _ in range(200)]
    names += [b"x{" + os.urandom(rng.randint(0, 6)) + b"}y" for _ in range(100)]
    port = cluster.masters()[0].port
    for name in names:
        assert node_command(port, "CLUSTER", "KEYSLOT", name, check=False) == key_slot(name), name


def test_a_key_is_served_by_its_master_and_moved_elsewhere(cluster: RedisClusterSetup) -> None:
    key = "eb:{moved-test}"
    owner = cluster.node_for_key(key)
    assert node_command(owner.port, "SET", key, "1", check=False) == b"OK"
    other = next(n for n in cluster.masters() if n.port != owner.port)
    reply = node_command(other.port, "GET", key, check=False)
    assert isinstance(reply, Redirected)
    assert reply.code == "MOVED"
    assert (reply.slot, reply.node) == (key_slot(key), f"127.0.0.1:{owner.port}")


async def test_a_killed_master_is_replaced_by_its_replica(
    redis_cluster_factory: Callable[..., RedisClusterSetup],
) -> None:
    cluster = redis_cluster_factory()
    key = "eb:{failover-test}"
    old = cluster.node_for_key(key)
    pool = SyncPool(ConnectionOptions(host="127.0.0.1", port=old.port, socket_timeout=10))
    try:  # WAIT on the connection that wrote: the write is on the replica too
        assert pool.request(pack(["SET", key, "kept"]) + pack(["WAIT", 1, 5000]), 2) == [b"OK", 1]
    finally:
        pool.close()
    cluster.kill(old)

    def promoted() -> bool:
        try:
            return cluster.node_for_key(key).port != old.port and cluster.health() == ""
        except Exception:  # a node may refuse while the cluster reconfigures
            return False

    await wait_for(promoted, timeout=60, message="the replica's promotion")
    new = cluster.node_for_key(key)
    assert node_command(new.port, "GET", key, check=False) == b"kept"
    pids = [n.process.pid for n in cluster.running() if n.process is not None]
    cluster.close()
    for pid in pids:  # close leaves nothing running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

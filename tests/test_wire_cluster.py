"""The wire's cluster router against a real local cluster: commands routed by slot,
MOVED followed after a slot moves, ASK during a migration, a failover waited out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio

from eventbus.testing.cluster import RedisClusterSetup, node_command
from eventbus.wire import ConnectionOptions, pack
from eventbus.wire.cluster import ClusterRouter
from eventbus.wire.slots import key_slot

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSetup]:
    with RedisClusterSetup() as made:
        yield made


@pytest_asyncio.fixture
async def router(cluster: RedisClusterSetup) -> AsyncIterator[ClusterRouter]:
    made = ClusterRouter([ConnectionOptions.from_url(cluster.url, socket_timeout=5)])
    await made.refresh()
    yield made
    await made.aclose()


async def test_commands_go_to_the_master_of_their_slot(
    cluster: RedisClusterSetup, router: ClusterRouter
) -> None:
    assert router.nodes == sorted(f"127.0.0.1:{n.port}" for n in cluster.masters())
    keys = [f"eb:{{stream-{i}}}" for i in range(30)]
    owners = {cluster.node_for_key(k).port for k in keys}
    assert len(owners) == 3  # spread over every master
    for key in keys:
        got = await router.request(key_slot(key), [pack(["SET", key, key]), pack(["GET", key])])
        assert got == [b"OK", key.encode()]


def _move_slot(cluster: RedisClusterSetup, slot: int, keys: list[str], *, finish: bool) -> int:
    """Migrate `slot` (holding `keys`) from its master to another; with `finish`, the
    slot then belongs to the target on every master (else it stays MIGRATING, its keys
    gone: requests get ASK). Returns the target's port."""
    source = cluster.master_of_slot(slot)
    target = next(n for n in cluster.masters() if n.port != source.port)
    source_id = node_command(source.port, "CLUSTER", "MYID")
    target_id = node_command(target.port, "CLUSTER", "MYID")
    assert isinstance(source_id, bytes) and isinstance(target_id, bytes)
    node_command(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    node_command(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    for key in keys:
        node_command(source.port, "MIGRATE", "127.0.0.1", target.port, key, 0, 5000)
    if finish:
        for node in cluster.masters():
            node_command(node.port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return target.port


async def test_moved_is_followed_and_each_command_runs_once(
    cluster: RedisClusterSetup, router: ClusterRouter
) -> None:
    key = "eb:{moving}"
    slot = key_slot(key)
    assert await router.request(slot, [pack(["SET", key, "v"])]) == [b"OK"]
    target = _move_slot(cluster, slot, [key], finish=True)
    # the router's map is stale: MOVED, a refresh, and only then the commands run
    got = await router.request(slot, [pack(["INCR", f"{key}:n"]), pack(["GET", key])])
    assert got == [1, b"v"]
    assert router.node_of(slot) == f"127.0.0.1:{target}"
    assert node_command(target, "GET", f"{key}:n") == b"1"


async def test_ask_during_a_migration(cluster: RedisClusterSetup, router: ClusterRouter) -> None:
    key = "eb:{asked}"
    slot = key_slot(key)
    assert await router.request(slot, [pack(["SET", key, "here"])]) == [b"OK"]
    source = cluster.master_of_slot(slot).port
    target = _move_slot(cluster, slot, [key], finish=False)
    try:
        assert await router.request(slot, [pack(["GET", key])]) == [b"here"]
        assert router.node_of(slot) == f"127.0.0.1:{source}"  # ASK does not move the map
    finally:
        for node in cluster.masters():
            node_command(
                node.port,
                "CLUSTER",
                "SETSLOT",
                slot,
                "NODE",
                node_command(target, "CLUSTER", "MYID"),
            )


async def test_a_failover_is_waited_out_within_the_deadline(
    redis_cluster_factory: Callable[..., RedisClusterSetup],
) -> None:
    cluster = redis_cluster_factory()
    router = ClusterRouter([ConnectionOptions.from_url(cluster.url, socket_timeout=2)])
    try:
        await router.refresh()
        key = "eb:{failing-over}"
        slot = key_slot(key)
        # WAIT on the connection that wrote: the write is on the replica too
        assert await router.request(slot, [pack(["SET", key, "1"]), pack(["WAIT", 1, 5000])]) == [
            b"OK",
            1,
        ]
        cluster.kill(cluster.node_for_key(key))
        # the master is gone; its replica takes over within a few node timeouts
        got = await router.request(slot, [pack(["INCR", key])], deadline_s=60)
        assert got == [2]
    finally:
        await router.aclose()

"""A real local Redis Cluster for tests: masters and replicas as child processes.

    with RedisClusterSetup(masters=3, replicas=1) as cluster:
        cluster.url                      # redis://127.0.0.1:<a node's port>
        cluster.node_for_key("eb:{orders}")
        cluster.kill(cluster.master_of_slot(slot))   # a failover: its replica takes over

Every node is a `RedisServer` (its own free port and data directory) started with
``--cluster-enabled yes``, a short ``cluster-node-timeout`` (failovers within a few
seconds) and a cluster bus port of its own (``cluster-port``, Redis >= 7.0), joined with
``redis-cli --cluster create``. `start` returns once every node reports
``cluster_state:ok``, every slot is served and every replica is in sync.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Self

from eventbus.embedded import find_redis_server
from eventbus.errors import EmbeddedServerError, EventBusError
from eventbus.testing.server import RedisServer, free_port, release_port
from eventbus.wire import Arg, ConnectionOptions, SyncPool, pack
from eventbus.wire.slots import SLOTS, key_slot

CLUSTER_MIN_VERSION = (7, 0, 0)  # cluster-port: a bus port of our choosing


class RedisClusterSetup:
    """`masters` masters with `replicas` replicas each, on 127.0.0.1."""

    def __init__(
        self,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        binary: str | None = None,
    ) -> None:
        if masters < 3:
            raise ValueError("Redis Cluster needs at least 3 masters")
        found, version = find_redis_server() if binary is None else (binary, None)
        if version is not None and version < CLUSTER_MIN_VERSION:
            raise EmbeddedServerError(
                f"a test cluster needs redis-server >= 7.0 (cluster-port); {found} is "
                f"{'.'.join(map(str, version))}"
            )
        self.binary = found
        self.masters_wanted = masters
        self.replicas_wanted = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisServer] = []
        self._bus_ports: list[int] = []

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Self:
        deadline = time.monotonic() + timeout
        try:
            for _ in range(self.masters_wanted * (1 + self.replicas_wanted)):
                self.nodes.append(self._node().start())
            self._create()
            self._wait_until_healthy(deadline)
        except BaseException:
            self.close()
            raise
        return self

    def _node(self) -> RedisServer:
        bus_port = free_port()
        self._bus_ports.append(bus_port)
        return RedisServer(
            binary=self.binary,
            extra_args=[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--cluster-port",
                str(bus_port),
                # a replica takes over however long it was cut off from its master
                "--cluster-replica-validity-factor",
                "0",
            ],
        )

    def _create(self) -> None:
        cli = _redis_cli(self.binary)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        done = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.replicas_wanted),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise EmbeddedServerError(
                f"redis-cli --cluster create failed: {output.splitlines()[-3:]}"
            )

    def _wait_until_healthy(self, deadline: float) -> None:
        problem = "not checked yet"
        while time.monotonic() < deadline:
            problem = self.health()
            if not problem:
                return
            time.sleep(0.05)
        raise EmbeddedServerError(f"the test cluster did not become healthy: {problem}")

    def health(self) -> str:
        """What is wrong with the cluster now ("" when nothing: every running node says
        cluster_state:ok, the masters serve all 16,384 slots and the replicas are in
        sync with them)."""
        try:
            for node in self.running():
                if b"cluster_state:ok" not in node_command(node.port, "CLUSTER", "INFO"):
                    return f"node {node.port}: cluster_state is not ok"
                replication = node_command(node.port, "INFO", "replication")
                if b"role:slave" in replication and b"master_link_status:up" not in replication:
                    return f"replica {node.port}: not in sync with its master"
            served = sum(end - start + 1 for start, end, _ in self.slot_ranges())
        except (EventBusError, OSError) as exc:
            return f"a node did not answer: {exc}"
        if served != SLOTS:
            return f"{served} of {SLOTS} slots served"
        return ""

    def close(self) -> None:
        """Stop every node, remove their data, release their ports (idempotent)."""
        for node in self.nodes:
            node.close()
        for port in self._bus_ports:
            release_port(port)
        self.nodes, self._bus_ports = [], []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the topology ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """A seed URL: one node's (a cluster client finds the others from it)."""
        return self.running()[0].url

    @property
    def seeds(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.running()]

    def running(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def slot_ranges(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master's port) for every served range, as a running
        node sees them (CLUSTER SLOTS)."""
        reply = node_command(self.running()[0].port, "CLUSTER", "SLOTS")
        return sorted((int(row[0]), int(row[1]), int(row[2][1])) for row in reply)

    def master_of_slot(self, slot: int) -> RedisServer:
        for start, end, port in self.slot_ranges():
            if start <= slot <= end:
                return self._by_port(port)
        raise LookupError(f"no master serves slot {slot}")

    def node_for_key(self, key: bytes | str) -> RedisServer:
        """The master that serves `key`'s slot now."""
        return self.master_of_slot(key_slot(key))

    def masters(self) -> list[RedisServer]:
        ports = sorted({port for _, _, port in self.slot_ranges()})
        return [self._by_port(port) for port in ports]

    def replicas(self) -> list[RedisServer]:
        masters = {node.port for node in self.masters()}
        return [node for node in self.running() if node.port not in masters]

    def _by_port(self, port: int) -> RedisServer:
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"no node of this cluster on port {port}")

    def kill(self, node: RedisServer) -> None:
        """SIGKILL `node` (a crash); its replica takes over within a few node timeouts."""
        node.kill()

    def wait_until_healthy(self, timeout: float = 30.0) -> None:
        """Wait for every running node to agree the cluster is ok again (after a
        failover, a restart)."""
        self._wait_until_healthy(time.monotonic() + timeout)


def node_command(port: int, *args: Arg, check: bool = True, timeout: float = 5.0) -> Any:
    """One command to the node on 127.0.0.1:`port`, its reply raw (RESP2 shapes); an error
    reply raises, or with ``check=False`` is returned (to look at a MOVED, say)."""
    pool = SyncPool(ConnectionOptions(host="127.0.0.1", port=port, socket_timeout=timeout))
    try:
        [reply] = pool.request(pack(list(args)))
    finally:
        pool.close()
    if check and isinstance(reply, Exception):
        raise reply
    return reply


def _redis_cli(server_binary: str) -> str:
    """redis-cli beside the server binary, else on the PATH."""
    beside = Path(server_binary).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    found = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if found is None:
        raise EmbeddedServerError(
            "redis-cli is needed to create a test cluster (apt install redis-tools)"
        )
    return found


__all__ = ["RedisClusterSetup", "node_command"]

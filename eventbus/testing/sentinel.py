"""A throwaway Redis Sentinel setup for tests: 1 master, 1 replica, 3 sentinels.

Every process is a `RedisServer` (a free port reserved across processes, data in a temp
dir, SIGKILL/restart, the log's tail in errors); a sentinel is ``redis-server <conf>
--sentinel`` with its own conf file, which it rewrites as it learns the topology.
Admin commands go through redis-py's sync client, one try each (no retries), so a
process that died is noticed at once rather than retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventbus.errors import EmbeddedServerError
from eventbus.testing.server import RedisServer

HOST = "127.0.0.1"
Address = tuple[str, int]


def admin_client(port: int, timeout: float = 1.0) -> redis.Redis:
    """A sync client for admin commands: strings back, one try per command."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


class SentinelServer(RedisServer):
    """``redis-server <conf> --sentinel`` watching one master (see `SentinelSetup`)."""

    def __init__(
        self,
        master_name: str,
        master_port: int,
        *,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        binary: str | None = None,
    ) -> None:
        super().__init__(binary=binary)
        self.master_name = master_name
        self.master_port = master_port
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self._conf_port: int | None = None

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "sentinel.conf"

    def _args(self) -> list[str]:
        # written afresh only for a new port (the first start, or a move before serving):
        # a restart keeps the conf the sentinel rewrote (its id, the replicas it knows)
        if self._conf_port != self.port:
            self._write_conf()
        return [self.binary, str(self.conf_path), "--sentinel", *self.extra_args]

    def _write_conf(self) -> None:
        name = self.master_name
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            "daemonize no",
            f"dir {self.data_dir}",
            f"logfile {self.data_dir / 'redis.log'}",
            "sentinel resolve-hostnames no",
            f"sentinel monitor {name} {HOST} {self.master_port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")
        self._conf_port = self.port


class SentinelSetup:
    """1 master + 1 replica + 3 sentinels on 127.0.0.1, torn down by `close()`.

    ``start()`` returns once every sentinel knows the master, the replica and the other
    two sentinels, and the replica is in sync. ``kill_master()`` SIGKILLs the current
    master; ``wait_for_failover()`` waits for the sentinels to promote the replica.
    """

    def __init__(
        self,
        master_name: str = "eventbus",
        *,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        binary: str | None = None,
    ) -> None:
        self.master_name = master_name
        self._sentinel_count = sentinels
        self._quorum = quorum
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms
        self._binary = binary
        self.servers: list[RedisServer] = []  # the master first, then the replica
        self.sentinel_servers: list[SentinelServer] = []
        self._known_master: Address | None = None
        self._closed = False

    @property
    def sentinels(self) -> list[Address]:
        return [(HOST, sentinel.port) for sentinel in self.sentinel_servers]

    def start(self, timeout: float = 30.0) -> Self:
        if self._closed:
            raise EmbeddedServerError("this SentinelSetup is closed")
        if self.servers:
            return self
        deadline = time.monotonic() + timeout
        # no delay before a full sync (the default waits 5 s for more replicas)
        args = ["--repl-diskless-sync-delay", "0"]
        master = RedisServer(binary=self._binary, extra_args=args)
        self.servers.append(master)  # closed by close() even if it fails to start
        master.start(_left(deadline))
        replica = RedisServer(
            binary=self._binary, extra_args=[*args, "--replicaof", HOST, str(master.port)]
        )
        self.servers.append(replica)
        replica.start(_left(deadline))
        for _ in range(self._sentinel_count):
            sentinel = SentinelServer(
                self.master_name,
                master.port,
                quorum=self._quorum,
                down_after_ms=self._down_after_ms,
                failover_timeout_ms=self._failover_timeout_ms,
                binary=self._binary,
            )
            self.sentinel_servers.append(sentinel)
            sentinel.start(_left(deadline))
        self._wait(deadline, "the replica to be in sync", lambda: self._in_sync(replica))
        self._wait(deadline, "the sentinels to know it all", lambda: self._sentinels_ready(master))
        self._known_master = (HOST, master.port)
        return self

    def _in_sync(self, replica: RedisServer) -> bool:
        with admin_client(replica.port) as client:
            info: dict[str, object] = client.info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _sentinels_ready(self, master: RedisServer) -> bool:
        """Every sentinel has the master, a replica and the other sentinels."""
        others = self._sentinel_count - 1
        for sentinel in self.sentinel_servers:
            with admin_client(sentinel.port) as client:
                state = _pairs(client.execute_command("SENTINEL", "MASTER", self.master_name))
            if not (
                state.get("port") == str(master.port)
                and int(state.get("num-slaves", 0)) >= 1
                and int(state.get("num-other-sentinels", 0)) >= others
            ):
                return False
        return True

    def _wait(self, deadline: float, what: str, condition: Callable[[], bool]) -> None:
        last_error: Exception | None = None
        while True:
            try:
                if condition():
                    return
            except redis.RedisError as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        error = f"; last error: {last_error}" if last_error else ""
        raise EmbeddedServerError(f"timed out waiting for {what}{error}; {self.log_tails()}")

    def log_tails(self, lines: int = 3) -> str:
        """The last lines of every process's log, for error messages."""
        parts = [f"server {s.port}: {s.log_tail(lines)}" for s in self.servers]
        parts += [f"sentinel {s.port}: {s.log_tail(lines)}" for s in self.sentinel_servers]
        return " || ".join(parts)

    def master_address(self) -> Address:
        """The master's (host, port), asked of the first sentinel that answers."""
        last_error: Exception | None = None
        for sentinel in self.sentinel_servers:
            try:
                address = self._ask_master(sentinel.port)
            except redis.RedisError as exc:
                last_error = exc
                continue
            if address is not None:
                return address
        raise EmbeddedServerError(f"no sentinel knows master {self.master_name!r}: {last_error}")

    def _ask_master(self, sentinel_port: int) -> Address | None:
        with admin_client(sentinel_port) as client:
            reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        if not reply:
            return None
        host, port = reply
        return (str(host), int(port))

    def server_at(self, address: Address) -> RedisServer:
        """The `RedisServer` (master or replica) listening on `address`."""
        for server in self.servers:
            if (HOST, server.port) == address:
                return server
        raise EmbeddedServerError(f"no server of this setup at {address}")

    def kill_master(self) -> Address:
        """SIGKILL the current master (as the sentinels report it); return its address."""
        address = self.master_address()
        self.server_at(address).kill()
        return address

    def wait_for_failover(self, timeout: float = 30.0) -> Address:
        """Wait until every sentinel reports a master other than the last one this setup
        knew (at start, or the previous failover) and that server answers as a master;
        return its address."""
        old = self._known_master
        deadline = time.monotonic() + timeout
        new: list[Address] = []

        def promoted() -> bool:
            addresses = {self._ask_master(s.port) for s in self.sentinel_servers}
            if len(addresses) != 1:
                return False
            (address,) = addresses
            if address is None or address == old:
                return False
            with admin_client(address[1]) as client:
                role = client.execute_command("ROLE")
            if role[0] != "master":
                return False
            new[:] = [address]
            return True

        self._wait(deadline, f"a failover from {old}", promoted)
        self._known_master = new[0]
        return new[0]

    def pids(self) -> list[int]:
        """The pids of the processes running now."""
        processes = [s.process for s in [*self.servers, *self.sentinel_servers]]
        return [p.pid for p in processes if p is not None and p.poll() is None]

    def close(self) -> None:
        """Stop everything (sentinels first), remove the temp dirs, release the ports."""
        self._closed = True
        errors: list[Exception] = []
        for server in [*self.sentinel_servers, *self.servers]:
            try:
                server.close()
            except Exception as exc:  # close the others all the same
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _pairs(reply: dict[str, str] | list[str]) -> dict[str, str]:
    """A map reply (RESP3) or a flat [key, value, key, value, ...] one (RESP2) as a dict."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))

"""Throwaway Redis servers for tests."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventbus.embedded import find_redis_server
from eventbus.errors import EmbeddedServerError

ENV_TEST_URL = "EVENTBUS_TEST_REDIS_URL"


# Ports handed out by `free_port`, each held by a lock on a file of this directory while
# the process that took it lives (or until `release_port`): parallel test workers (pytest
# -n) never pick the same port, not even one whose server is down for a restart.
PORT_LOCKS = Path(tempfile.gettempdir()) / f"eventbus-test-ports-{os.getuid()}"
_held: dict[int, int] = {}  # port -> the descriptor of its lock file


def free_port() -> int:
    """A TCP port free on 127.0.0.1 and reserved for this process (see `PORT_LOCKS`)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if _reserve(port):
            return port
    raise EmbeddedServerError(f"no free port could be reserved (locks in {PORT_LOCKS})")


def _reserve(port: int) -> bool:
    if port in _held:
        return False
    PORT_LOCKS.mkdir(exist_ok=True)
    fd = os.open(PORT_LOCKS / str(port), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another process holds it
        os.close(fd)
        return False
    _held[port] = fd
    return True


def release_port(port: int) -> None:
    """Give back a port from `free_port` (its server is gone for good)."""
    fd = _held.pop(port, None)
    if fd is not None:
        os.close(fd)


def _worker() -> str:
    """The pytest-xdist worker's id and a dash ("gw1-"), or "" outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return f"{worker}-" if worker else ""


class RedisServer:
    """A redis-server child process on 127.0.0.1:<free port>, data in a temp dir.

    ``appendonly=True`` persists every write (``appendfsync always``) so a test can
    kill or restart the server and assert that nothing was lost.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        binary: str | None = None,
        port: int | None = None,
        data_dir: str | Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.binary = binary or find_redis_server()[0]
        self._port_is_ours = port is None
        self.port = port or free_port()
        self._started = False
        self.appendonly = appendonly
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"eventbus-redis-{_worker()}")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args + self.extra_args

    def start(self, timeout: float = 10.0) -> Self:
        """Start (or start again, on the same port and data); return once it answers."""
        if self.process is not None and self.process.poll() is None:
            return self
        for _ in range(5):
            log_start = self._log_size()
            self.process = subprocess.Popen(
                self._args(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_until_ready(self.process, timeout):
                self._started = True
                return self
            if not (self._may_move and self._port_was_taken(log_start)):
                break
            # a socket of another process took the port before this server could bind it
            release_port(self.port)
            self.port = free_port()
        raise EmbeddedServerError(
            f"redis-server on port {self.port} did not start: {self.log_tail()}"
        )

    @property
    def _may_move(self) -> bool:
        """Whether a start may pick another port: ours, and never served on (a restart
        keeps its port, the one its clients know)."""
        return self._port_is_ours and not self._started

    def _wait_until_ready(self, process: subprocess.Popen[bytes], timeout: float) -> bool:
        """True once this process answers (its own pid in INFO: not another server that
        holds the port) with its data set loaded; False if it exits or `timeout` passes."""
        deadline = time.monotonic() + timeout
        # one try per round (no retries): a port held by something that does not answer
        # must not stall the check of whether this process is still alive
        client = redis.Redis(
            port=self.port, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        try:
            while process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(redis.RedisError):
                    info = client.info()
                    if info.get("process_id") == process.pid and info.get("loading", 0) == 0:
                        return True
                time.sleep(0.02)
            return False
        finally:
            client.close()

    def _log_size(self) -> int:
        try:
            return (self.data_dir / "redis.log").stat().st_size
        except OSError:
            return 0

    def _port_was_taken(self, log_start: int) -> bool:
        try:
            with (self.data_dir / "redis.log").open("rb") as log:
                log.seek(log_start)
                return b"Address already in use" in log.read()
        except OSError:
            return False

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.data_dir / "redis.log").read_text(errors="replace")
        except OSError:
            return "no log"
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM: Redis writes out its AOF buffer first)."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Hard stop (SIGKILL), like a crash."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.kill()
        if self._port_is_ours:
            release_port(self.port)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def docker_available() -> bool:
    """True when a Docker engine answers (testcontainers can run a Redis container)."""
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    try:
        import docker  # type: ignore[import-untyped, unused-ignore]

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@contextlib.contextmanager
def test_redis_url() -> Iterator[str]:
    """A Redis URL for a test session (see the module docstring for the order)."""
    url = os.environ.get(ENV_TEST_URL)
    if url:
        yield url
        return
    if docker_available():
        from testcontainers.redis import RedisContainer  # type: ignore[import-untyped, unused-ignore]

        with RedisContainer("redis:7") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return
    with RedisServer() as server:
        yield server.url


test_redis_url.__test__ = False  # type: ignore[attr-defined]  # not a pytest test

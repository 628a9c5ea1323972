"""The embedded default: a real redis-server under a data directory, never orphaned."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventbus import EmbeddedServerError, EventBus
from eventbus.embedded import EmbeddedRedis, find_redis_server, socket_path_for
from eventbus.testing import wait_for
from tests.apps.events import Job

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import asyncio, sys
from eventbus import EventBus
from tests.apps.events import Job

async def main() -> None:
    bus = EventBus.from_url(None, service="child", prefix="emb", data_dir=sys.argv[1])
    print("owned" if bus.embedded.owned else "shared", flush=True)
    if sys.argv[2] == "publish":
        await bus.publish(Job(n=2))
        print(await bus.redis.xlen(bus.keys.stream("jobs")), flush=True)
    else:
        info = await bus.redis.info("server")
        print(info["process_id"], flush=True)
        await asyncio.sleep(3600)
    await bus.aclose()

asyncio.run(main())
"""


def child(data_dir: Path, mode: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "EVENTBUS_REDIS_URL"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir), mode],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(autouse=True)
def no_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTBUS_REDIS_URL", raising=False)


async def test_starts_a_server_shared_by_other_processes(tmp_path: Path) -> None:
    bus = EventBus.from_url(None, service="emb", prefix="emb", data_dir=tmp_path)
    try:
        assert bus.embedded is not None and bus.embedded.owned
        assert (tmp_path / "redis.sock").exists()
        await bus.publish(Job(n=1))
        proc = child(tmp_path, "publish")
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
        assert out.split() == ["shared", "2"]  # reached our server, did not start one
        assert await bus.redis.xlen(bus.keys.stream("jobs")) == 2
    finally:
        await bus.aclose()
    assert not bus.embedded.owned
    # persisted (AOF): a new server on the same directory has the data
    again = EventBus.from_url(None, service="emb", prefix="emb", data_dir=tmp_path)
    try:
        assert again.embedded is not None and again.embedded.owned
        assert await again.redis.xlen(again.keys.stream("jobs")) == 2
    finally:
        await again.aclose()


async def test_no_orphaned_server_when_the_owner_is_killed(tmp_path: Path) -> None:
    proc = child(tmp_path, "hold")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "owned"
    server_pid = int(proc.stdout.readline())
    assert pid_alive(server_pid)
    proc.kill()  # SIGKILL: no atexit, no cleanup code runs
    proc.wait()
    proc.stdout.close()
    await wait_for(lambda: not pid_alive(server_pid), timeout=10, message="server exit")


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ", 1)[1][0] != "Z"  # a zombie has exited


async def test_env_url_wins_over_embedded(
    monkeypatch: pytest.MonkeyPatch, eventbus_redis_url: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("EVENTBUS_REDIS_URL", eventbus_redis_url)
    bus = EventBus.from_url(None, service="emb", data_dir=tmp_path)
    try:
        assert bus.embedded is None and bus.url == eventbus_redis_url
    finally:
        await bus.aclose()
    assert not (tmp_path / "redis.sock").exists()


def test_long_data_dir_paths_get_a_short_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = socket_path_for(deep)
    assert len(str(path)) < 100 and str(path).startswith("/tmp/eventbus-")
    assert socket_path_for(deep) == path  # stable: other processes find it too


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVENTBUS_REDIS_SERVER", str(tmp_path / "no-such-redis-server"))
    with pytest.raises(EmbeddedServerError, match=r"no redis-server found.*eventbus\[embedded\]"):
        EmbeddedRedis(tmp_path).ensure()


def test_picks_the_newest_binary() -> None:
    binary, version = find_redis_server()
    assert Path(binary).name == "redis-server" and version >= (6, 2, 0)

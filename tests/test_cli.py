"""The command line: help, errors without tracebacks, the demo end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_cli


def eventbus(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, timeout=timeout)


def test_help() -> None:
    result = eventbus("--help")
    assert result.returncode == 0
    assert "run" in result.stdout and "demo" in result.stdout
    for command in ("run", "demo"):
        sub = eventbus(command, "--help")
        assert sub.returncode == 0
        assert "--redis-url" in sub.stdout and "--prefix" in sub.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no_such_module"], "no module named 'no_such_module'"),
        (["run", "tests.apps.events"], "declares no handlers"),
        (["run", "tests.apps.recorder:nope"], "has no 'nope'"),
        (["run", "tests.apps.recorder:DELAY"], "is a float, not an eventbus Router"),
        (
            [
                "run",
                "tests.apps.recorder",
                "--redis-url",
                "redis://127.0.0.1:1",
                "--connect-timeout",
                "0.5",
            ],
            "cannot reach Redis at redis://127.0.0.1:1",
        ),
        (["run", "tests.apps.recorder", "--redis-url", "http://x"], "invalid Redis URL"),
        (["run", "tests.apps.recorder", "--prefix", "a b"], "invalid prefix name"),
    ],
)
def test_user_mistakes_get_one_clear_line(args: list[str], message: str) -> None:
    result = eventbus(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_bad_arguments_are_usage_errors() -> None:
    result = eventbus("run", "handlers", "--grace", "soon")
    assert result.returncode == 2
    assert "expected a number of seconds" in result.stderr
    assert eventbus("nope").returncode == 2


def test_password_is_not_printed() -> None:
    result = eventbus(
        "run", "handlers", "--redis-url", "redis://user:s3cret@127.0.0.1:1/0",
        "--connect-timeout", "0.2",
    )  # fmt: skip
    assert result.returncode == 2
    assert "s3cret" not in result.stderr and "user:***@127.0.0.1:1" in result.stderr


def test_demo_on_the_embedded_default(tmp_path: Path) -> None:
    result = eventbus("demo", "--events", "600", "--data-dir", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "embedded Redis" in out
    assert "Summary (read from Redis): 600 events published" in out
    rows = {
        line.split()[0]: line.split()[1:]
        for line in out.splitlines()
        if line.strip().startswith("notes-demo.")
    }
    assert set(rows) >= {
        "notes-demo.note-store", "notes-demo.search-index", "notes-demo.audit-log",
        "notes-demo.notifier",
    }  # fmt: skip
    # handled, retried, dead, pending, lag
    assert rows["notes-demo.note-store"][0] == "600"
    assert rows["notes-demo.notifier"][2] == "1"  # the poison note
    assert all(r[3] == "0" and r[4] == "0" for r in rows.values())
    assert "dlq holds 1 entry (the poison notes" in out
    assert "audit log: 600 lines for 600 events" in out
    # the embedded server stopped with the demo
    assert not (tmp_path / "redis.sock").exists() or not socket_answers(tmp_path / "redis.sock")
    # the commands it suggests work as printed, on the data it left
    [hint] = [line for line in out.splitlines() if line.startswith("Look around: ")]
    suggested = hint.removeprefix("Look around: ").split("  |  ")
    assert suggested[1] == f"eventbus dlq ls notes --prefix demo --data-dir {tmp_path}"
    letters = eventbus(*suggested[1].split()[1:], "--json")
    assert letters.returncode == 0, letters.stderr
    [poison] = json.loads(letters.stdout)
    assert poison["group"] == "notes-demo.notifier" and poison["reason"] == "failed"


def socket_answers(path: Path) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def test_schedules_command(eventbus_redis_url: str, eventbus_prefix: str) -> None:
    import json

    empty = eventbus("schedules", "--redis-url", eventbus_redis_url, "--prefix", eventbus_prefix)
    assert empty.returncode == 0 and "no schedules found" in empty.stdout
    listed = eventbus(
        "schedules", "handlers", "--json", "--redis-url", eventbus_redis_url,
        "--prefix", eventbus_prefix,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["name"] == "cleanup-old-notes" and row["spec"] == "0 3 * * *"
    assert row["tz"] == "UTC" and row["next_tick"].endswith("T03:00:00.000000Z")
    assert row["fires"] == 0 and row["last_tick"] is None
    table = eventbus(
        "schedules", "handlers", "--redis-url", eventbus_redis_url, "--prefix", eventbus_prefix
    )
    assert "NAME" in table.stdout and "cleanup-old-notes" in table.stdout


def test_run_and_scheduler_help_and_nothing_to_run() -> None:
    assert "--no-scheduler" in eventbus("run", "--help").stdout
    assert "replicas" in eventbus("scheduler", "--help").stdout
    result = eventbus("scheduler", "tests.apps.recorder", "--redis-url", "redis://127.0.0.1:1")
    assert result.returncode == 2 and "nothing to run" in result.stderr

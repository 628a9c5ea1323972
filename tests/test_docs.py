"""The examples in docs/ are real programs: run them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from prometheus_client.parser import text_string_to_metric_families

from eventbus import Backoff, Context, EventBus, Router
from eventbus.testing import running_worker, wait_for
from tests.apps.events import Job

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_quickstart(eventbus_redis_url: str, eventbus_prefix: str) -> None:
    quickstart = load("quickstart")
    await quickstart.main(eventbus_redis_url, prefix=eventbus_prefix)
    assert quickstart.ledger == {"o-1": 4200}
    assert len(quickstart.emails) == 2


def test_testing_example_passes_under_pytest() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
         str(EXAMPLES / "test_my_handlers.py")],  # -n 0: one test needs no xdist workers
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


async def test_inspect_dead_letters(bus: EventBus, eventbus_redis_url: str) -> None:
    example = load("inspect_dead_letters")
    router = Router()

    @router.subscribe(name="always-fails", max_attempts=1, backoff=Backoff(initial=0.01))
    async def fail(event: Job, ctx: Context) -> None:
        raise RuntimeError("nope")

    async with running_worker(bus, router):
        await bus.publish(Job(n=1))
        await wait_for(lambda: bus.redis.xlen(bus.keys.dlq("jobs")))
    [dead] = await example.dead_letters(eventbus_redis_url, "jobs", bus.keys.prefix)
    assert dead["dlq_error"] == "nope" and dead["dlq_group"] == "test.always-fails"


async def test_publishing_example(eventbus_redis_url: str, eventbus_prefix: str) -> None:
    example = load("publishing")
    result = await example.main(eventbus_redis_url, prefix=eventbus_prefix)
    assert result["batch"] == 10 and result["dropped"] == []
    stats = result["stats"]
    assert stats.published == 1011 and stats.duplicates == 1
    check = EventBus.from_url(eventbus_redis_url, service="check", prefix=eventbus_prefix)
    try:
        assert await check.redis.xlen(check.keys.stream("checkouts")) == 11
        assert await check.redis.xlen(check.keys.stream("clicks")) == 1001
    finally:
        await check.aclose()


async def test_idempotency_example(eventbus_redis_url: str, eventbus_prefix: str) -> None:
    example = load("idempotency")
    result = await example.main(eventbus_redis_url, prefix=eventbus_prefix)
    assert result == {"balance": 500, "receipts": ["p-1: receipt for p-1"]}


async def test_scheduling_example(eventbus_redis_url: str, eventbus_prefix: str) -> None:
    example = load("scheduling")
    count = await example.main(eventbus_redis_url, prefix=eventbus_prefix)
    assert count >= 3
    check = EventBus.from_url(eventbus_redis_url, service="check", prefix=eventbus_prefix)
    try:
        entries = await check.redis.xrange(check.keys.stream("heartbeats"))
        keys = [f[b"key"] for _, f in entries]
        assert len(keys) == len(set(keys))  # two schedulers, each tick once
        [invoices] = [s for s in example.router.schedules if s.name == "invoices-due"]
        assert invoices.tz_name == "Europe/Berlin" and invoices.misfire_grace_s == 7200
    finally:
        await check.aclose()


async def test_observability_example(eventbus_redis_url: str, eventbus_prefix: str) -> None:
    example = load("observability")
    text = await example.main(eventbus_redis_url, prefix=eventbus_prefix)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    group = (("group", "billing.receipts"), ("handler", "receipts"))

    def handled(outcome: str) -> float:
        labels = tuple(sorted((*group, ("stream", "invoices"), ("outcome", outcome))))
        return samples[("eventbus_events_handled_total", labels)]

    assert handled("ok") == 3 and handled("dead") == 1
    assert samples[("eventbus_stream_length", (("stream", "invoices"),))] == 4
    assert samples[("eventbus_dlq_length", (("stream", "invoices"),))] == 1
    assert samples[("eventbus_redis_up", ())] == 1

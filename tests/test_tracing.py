"""Traces across a real Redis: the delivery's CONSUMER span is a child of the PRODUCER
span of the publish, with messaging attributes; errors are recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from eventbus import Context, EventBus, Router, SyncPublisher, WorkerSettings
from eventbus.testing import running_worker, wait_for
from tests.apps.events import Job

EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # the global provider can be set once per process: keep it, clear its spans per test
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def by_name(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_publish_and_process_spans_are_parent_and_child(
    bus: EventBus, spans: InMemorySpanExporter
) -> None:
    inner: list[str] = []
    router = Router()
    tracer = trace.get_tracer("test")

    @router.subscribe(name="traced")
    async def handle(event: Job, ctx: Context) -> None:
        with tracer.start_as_current_span("handler work"):
            inner.append(ctx.stream_id)

    async with running_worker(bus, router):
        stream_id = await bus.publish(Job(n=1), key="k1")
        await wait_for(lambda: by_name(spans, "jobs process"))
    [producer] = by_name(spans, "jobs publish")
    [consumer] = by_name(spans, "jobs process")
    [work] = by_name(spans, "handler work")
    assert producer.kind is SpanKind.PRODUCER and consumer.kind is SpanKind.CONSUMER
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert work.parent is not None and work.parent.span_id == consumer.context.span_id
    attrs = dict(consumer.attributes or {})
    assert attrs["messaging.system"] == "redis"
    assert attrs["messaging.destination.name"] == "jobs"
    assert attrs["messaging.consumer.group.name"] == "test.traced"
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["eventbus.stream_id"] == stream_id and attrs["eventbus.delivery_count"] == 1
    assert attrs["messaging.message.id"] == dict(producer.attributes or {})["messaging.message.id"]
    assert dict(producer.attributes or {})["eventbus.stream_id"] == stream_id
    assert dict(producer.attributes or {})["messaging.operation.type"] == "send"


async def test_sync_handlers_run_inside_the_delivery_span(
    bus: EventBus, spans: InMemorySpanExporter
) -> None:
    router = Router()
    tracer = trace.get_tracer("test")

    @router.subscribe(name="threaded")
    def handle(event: Job) -> None:  # runs in the handler's thread pool
        with tracer.start_as_current_span("thread work"):
            pass

    async with running_worker(bus, router):
        await bus.publish(Job(n=1))
        await wait_for(lambda: by_name(spans, "thread work"))
    [consumer] = by_name(spans, "jobs process")
    [work] = by_name(spans, "thread work")
    assert work.parent is not None and work.parent.span_id == consumer.context.span_id
    assert work.context.trace_id == consumer.context.trace_id


async def test_errors_are_recorded_and_retries_traced(
    bus: EventBus, spans: InMemorySpanExporter
) -> None:
    router = Router()

    @router.subscribe(name="failing", backoff=0.05, max_attempts=2)
    async def handle(event: Job) -> None:
        raise ValueError("no good")

    async with running_worker(bus, router, settings=WorkerSettings(grace=5, reclaim_interval=0.1)):
        await bus.publish(Job(n=1))
        await wait_for(lambda: len(by_name(spans, "jobs process")) == 2, timeout=10)
    first, second = sorted(
        by_name(spans, "jobs process"),
        key=lambda s: dict(s.attributes or {})["eventbus.delivery_count"],
    )
    for span in (first, second):
        assert span.status.status_code is StatusCode.ERROR
        assert any(e.name == "exception" for e in span.events)
    assert dict(second.attributes or {})["eventbus.delivery_count"] == 2
    [producer] = by_name(spans, "jobs publish")
    assert second.parent is not None and second.parent.span_id == producer.context.span_id


async def test_fire_and_forget_batches_and_sync_publishes_are_traced(
    bus: EventBus, spans: InMemorySpanExporter, eventbus_redis_url: str, eventbus_prefix: str
) -> None:
    processed: list[int] = []
    router = Router()

    @router.subscribe(name="all")
    async def handle(event: Job) -> None:
        processed.append(event.n)

    publisher = SyncPublisher.from_url(eventbus_redis_url, service="sync", prefix=eventbus_prefix)
    try:
        async with running_worker(bus, router):
            bus.publish_nowait(Job(n=1))
            await bus.publish_many([Job(n=2), Job(n=3)])
            publisher.publish(Job(n=4))
            await wait_for(lambda: len(by_name(spans, "jobs process")) == 4)
    finally:
        publisher.close()
    producers = {s.context.span_id: s for s in by_name(spans, "jobs publish")}
    assert len(producers) == 4
    for consumer in by_name(spans, "jobs process"):
        assert consumer.parent is not None and consumer.parent.span_id in producers
    buffered = [s for s in producers.values() if dict(s.attributes or {}).get("eventbus.buffered")]
    assert len(buffered) == 1


async def test_scheduled_publishes_are_traced(bus: EventBus, spans: InMemorySpanExporter) -> None:
    from datetime import datetime

    from eventbus.schedules.scheduler import Scheduler
    from tests.apps.events import Beat

    router = Router()

    @router.schedule("* * * * * *", name="traced-beat")
    def beat(tick: datetime) -> Beat:
        return Beat(tick=tick.isoformat())

    async with Scheduler(bus, router.schedules):
        await wait_for(lambda: by_name(spans, "beats publish"), timeout=5)
    [span, *_] = by_name(spans, "beats publish")
    assert dict(span.attributes or {})["messaging.destination.name"] == "beats"


async def test_no_sdk_no_spans_and_no_trace_fields(bus: EventBus) -> None:
    """Without a TracerProvider, nothing is traced and envelopes carry no traceparent
    (run first in its own process to see the untraced path)."""
    import subprocess
    import sys

    code = (
        "import asyncio, sys\n"
        "from eventbus import EventBus\n"
        "from tests.apps.events import Job\n"
        "async def main():\n"
        "    bus = EventBus.from_url(sys.argv[1], service='t', prefix=sys.argv[2])\n"
        "    await bus.publish(Job(n=1))\n"
        "    [(_, f)] = await bus.redis.xrange(bus.keys.stream('jobs'))\n"
        "    print(sorted(k.decode() for k in f))\n"
        "    await bus.aclose()\n"
        "asyncio.run(main())\n"
    )
    run = subprocess.run  # in a thread: the event loop keeps going
    result = await asyncio.to_thread(
        run, [sys.executable, "-c", code, bus.url or "", bus.keys.prefix],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    out = result.stdout
    assert "traceparent" not in out and "'type'" in out

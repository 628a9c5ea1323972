"""eventbus against a hand-written redis-py asyncio loop, side by side, in one run.

    python benchmarks/bench.py                 # a throwaway redis-server, default sizes
    python benchmarks/bench.py --quick         # smaller sizes (a smoke run)
    python benchmarks/bench.py --faststream    # add FastStream's Redis StreamSub as a peer
    python benchmarks/bench.py --redis-url redis://127.0.0.1:6379/0
    python benchmarks/bench.py --only metrics --rounds 11   # one workload

Workloads (payload: a msgspec Struct of ~200 bytes, JSON):

- publish, sequential: one awaited publish / XADD at a time;
- publish, batched: 100 events per pipeline (publish_many / a pipelined XADD loop);
- publish_nowait: fire-and-forget calls then a flush, against the pipelined XADD loop;
- drain: N events already in the stream, one group, a no-op handler, until all acked;
- end to end: the consumer running while N events are published in batches;
- end to end, metrics on vs off: the same, eventbus against itself: handler-duration and
  event-age histograms plus a collector scraped every 0.5 s (reading Redis each time,
  no cache), against `metrics=False`
  and no collector;
- latency: 1,000 events/s for a few seconds, publish -> handler start, p50 / p99;
- validation on vs off: sequential publish, eventbus against itself, with the check that
  decodes each event before writing it (`PublishCore.check_decodes`) and with it
  replaced by a no-op, in alternating order.

The raw loop is what a careful engineer writes by hand: XADD; XREADGROUP COUNT 100
(BLOCK); decode; one XACK per batch. eventbus does its whole protocol on top
(envelope, leases, reclaim, batched acks, per-entry tasks). Each workload runs
eventbus and raw alternately, `--rounds` times; the best round of each is reported,
with the eventbus/raw ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventbus import Event, EventBus, PublishSettings, Router, Worker, WorkerSettings
from eventbus.metrics import EventbusCollector
from eventbus.publishing.core import PublishCore
from eventbus.testing import RedisServer


class Payload(Event, stream="bench"):
    order_id: str
    customer: str
    sku: str
    quantity: int
    price_cents: int
    currency: str
    note: str
    sent_ns: int = 0


def payload(i: int, sent_ns: int = 0) -> Payload:
    return Payload(
        order_id=f"order-{i:010d}",
        customer=f"customer-{i % 997:06d}@example.com",
        sku=f"SKU-{i % 1000:05d}-XL-BLUE",
        quantity=i % 7 + 1,
        price_cents=1999 + i % 500,
        currency="EUR",
        note="leave at the door, ring twice; fragile: glass inside",
        sent_ns=sent_ns,
    )


ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(Payload)
PAYLOAD_BYTES = len(ENCODER.encode(payload(1)))


@dataclass
class Result:
    """Rounds of (eventbus, raw) measured back to back. Figures are the best round of
    each; the ratio is the median of the rounds' own ratios, which pairs each eventbus
    round with the raw round next to it and so cancels the machine's drift."""

    name: str
    unit: str
    rounds: list[tuple[float, float]]
    faststream: float | None = None
    higher_is_better: bool = True
    sides: tuple[str, str] = ("eventbus", "raw")

    @property
    def eventbus(self) -> float:
        return best([r[0] for r in self.rounds], self.higher_is_better)

    @property
    def raw(self) -> float:
        return best([r[1] for r in self.rounds], self.higher_is_better)

    @property
    def ratio(self) -> float:
        return statistics.median(e / r for e, r in self.rounds if r)


# -- raw redis-py -------------------------------------------------------------------------


class Raw:
    def __init__(self, client: Redis, key: str) -> None:
        self.client = client
        self.key = key

    async def publish_sequential(self, n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            await self.client.xadd(
                self.key, {"type": "Payload", "data": ENCODER.encode(payload(i))}
            )
        return n / (time.perf_counter() - start)

    async def publish_batches(self, n: int, batch: int = 100) -> float:
        start = time.perf_counter()
        for first in range(0, n, batch):
            pipe = self.client.pipeline(transaction=False)
            for i in range(first, min(n, first + batch)):
                pipe.xadd(self.key, {"type": "Payload", "data": ENCODER.encode(payload(i))})
            await pipe.execute()
        return n / (time.perf_counter() - start)

    async def consume(
        self, group: str, n: int, on_event: Callable[[Payload], None] | None = None
    ) -> None:
        """XREADGROUP COUNT 100 / decode / one XACK per batch, until n events."""
        done = 0
        while done < n:
            resp = await self.client.xreadgroup(
                group, "raw", {self.key: ">"}, count=100, block=1000
            )
            if not resp:
                continue
            ids = []
            for entry_id, fields in resp[0][1]:
                event = DECODER.decode(fields[b"data"])
                if on_event is not None:
                    on_event(event)
                ids.append(entry_id)
            await self.client.xack(self.key, group, *ids)
            done += len(ids)


# -- workloads ----------------------------------------------------------------------------


async def fresh(client: Redis, *keys: str) -> None:
    await client.delete(*keys)
    gc.collect()


async def bench_publish_nowait(bus: EventBus, raw: Raw, n: int) -> tuple[float, float]:
    """Fire-and-forget: n publish_nowait calls, then flush (sustained: the buffer is
    larger than n, so nothing is dropped), against the pipelined raw XADD loop."""
    key = bus.keys.stream("bench")
    await fresh(bus.redis, key)
    start = time.perf_counter()
    for i in range(n):
        bus.publish_nowait(payload(i))
        if i % 1000 == 999:
            await asyncio.sleep(0)  # a producer that yields now and then, like a web handler
    if not await bus.flush(timeout=120):
        raise TimeoutError("publish_nowait did not flush")
    eb = n / (time.perf_counter() - start)
    assert bus.publish_stats.dropped == 0
    await fresh(bus.redis, key)
    rw = await raw.publish_batches(n)
    await fresh(bus.redis, key)
    return eb, rw


async def bench_publish(bus: EventBus, raw: Raw, n: int, batched: bool) -> tuple[float, float]:
    key = bus.keys.stream("bench")
    await fresh(bus.redis, key)
    start = time.perf_counter()
    if batched:
        for first in range(0, n, 100):
            await bus.publish_many([payload(i) for i in range(first, min(n, first + 100))])
    else:
        for i in range(n):
            await bus.publish(payload(i))
    eb = n / (time.perf_counter() - start)
    await fresh(bus.redis, key)
    rw = await (raw.publish_batches(n) if batched else raw.publish_sequential(n))
    await fresh(bus.redis, key)
    return eb, rw


class Counter:
    """Counts handled events; `reached` is set at the target."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.reached = asyncio.Event()

    def add(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()

    async def wait(self, timeout: float = 300) -> None:
        try:
            await asyncio.wait_for(self.reached.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"only {self.count} of {self.target} handled") from None


def noop_router(counter: Counter) -> Router:
    router = Router()

    @router.subscribe(name="bench-noop", concurrency=100, start_from="beginning")
    async def noop(event: Payload) -> None:
        counter.add()

    return router


async def eventbus_drained(bus: EventBus, group: str) -> None:
    """Wait for the last batched XACK: drained means acked, not just handled."""
    key = bus.keys.stream("bench")
    for _ in range(100_000):
        if int((await bus.redis.xpending(key, group))["pending"]) == 0:
            return
    raise TimeoutError("acks did not complete")


async def bench_drain(bus: EventBus, raw: Raw, n: int) -> tuple[float, float]:
    key = bus.keys.stream("bench")
    await fresh(bus.redis, key)
    await raw.publish_batches(n)
    counter = Counter(n)
    worker = Worker(bus, noop_router(counter), settings=WorkerSettings(grace=5))
    start = time.perf_counter()
    await worker.start()
    await counter.wait()
    await eventbus_drained(bus, worker.consumers[0].group)
    eb = n / (time.perf_counter() - start)
    await worker.stop()

    await fresh(bus.redis, key)
    await raw.publish_batches(n)
    start = time.perf_counter()
    await bus.redis.xgroup_create(key, "raw", id="0")
    await raw.consume("raw", n)
    rw = n / (time.perf_counter() - start)
    await fresh(bus.redis, key)
    return eb, rw


async def eventbus_end_to_end(
    bus: EventBus, n: int, *, metrics: bool = True, scrape_every: float | None = None
) -> float:
    """Events/s with a worker running while `n` events are published in batches of 100.

    `scrape_every`: register an `EventbusCollector` and scrape it from a thread that
    often (as Prometheus would, only much more often), for the cost of metrics on.
    """
    key = bus.keys.stream("bench")
    await fresh(bus.redis, key)
    counter = Counter(n)
    worker = Worker(bus, noop_router(counter), settings=WorkerSettings(grace=5, metrics=metrics))
    await worker.start()
    scraping = None
    if scrape_every is not None:
        scraping = Scraper(EventbusCollector(bus, worker=worker, cache_s=0), scrape_every)
    start = time.perf_counter()
    for first in range(0, n, 100):
        await bus.publish_many([payload(i) for i in range(first, min(n, first + 100))])
    await counter.wait()
    await eventbus_drained(bus, worker.consumers[0].group)
    rate = n / (time.perf_counter() - start)
    if scraping is not None:
        scraping.close()
    await worker.stop()
    return rate


class Scraper:
    """Scrapes a collector from a thread, as prometheus_client's HTTP server does."""

    def __init__(self, collector: EventbusCollector, every: float) -> None:
        self.collector = collector
        self.registry = CollectorRegistry()
        self.registry.register(collector)
        self.every = every
        self.scrapes = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(self.every):
            generate_latest(self.registry)
            self.scrapes += 1

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.collector.close()


async def bench_metrics_cost(bus: EventBus, n: int, on_first: bool) -> tuple[float, float]:
    """End to end with metrics on (histograms, a collector scraped every 0.5 s) vs off."""
    if on_first:
        on = await eventbus_end_to_end(bus, n, metrics=True, scrape_every=0.5)
        off = await eventbus_end_to_end(bus, n, metrics=False)
    else:
        off = await eventbus_end_to_end(bus, n, metrics=False)
        on = await eventbus_end_to_end(bus, n, metrics=True, scrape_every=0.5)
    await fresh(bus.redis, bus.keys.stream("bench"))
    return on, off


async def eventbus_sequential(bus: EventBus, n: int) -> float:
    key = bus.keys.stream("bench")
    await fresh(bus.redis, key)
    start = time.perf_counter()
    for i in range(n):
        await bus.publish(payload(i))
    rate = n / (time.perf_counter() - start)
    await fresh(bus.redis, key)
    return rate


def _no_validation(self: PublishCore, event: Event, data: bytes) -> None:
    return None


async def bench_validation(bus: EventBus, n: int, on_first: bool) -> tuple[float, float]:
    """Sequential publish with validation at publish (the default) vs without."""
    validate = PublishCore.check_decodes
    rates = {}
    for on in (True, False) if on_first else (False, True):
        PublishCore.check_decodes = validate if on else _no_validation  # type: ignore[method-assign]
        try:
            rates[on] = await eventbus_sequential(bus, n)
        finally:
            PublishCore.check_decodes = validate  # type: ignore[method-assign]
    return rates[True], rates[False]


async def bench_end_to_end(bus: EventBus, raw: Raw, n: int) -> tuple[float, float]:
    key = bus.keys.stream("bench")
    eb = await eventbus_end_to_end(bus, n)

    await fresh(bus.redis, key)
    await bus.redis.xgroup_create(key, "raw", id="$", mkstream=True)
    consumer = asyncio.create_task(raw.consume("raw", n))
    start = time.perf_counter()
    await raw.publish_batches(n)
    await consumer
    rw = n / (time.perf_counter() - start)
    await fresh(bus.redis, key)
    return eb, rw


async def paced(publish: Callable[[int], Awaitable[object]], rate: int, seconds: float) -> None:
    """Publish at `rate` events/s (sequential awaits, paced on the clock)."""
    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        target = start + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await publish(i)


def percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return p50, p99


async def bench_latency(
    bus: EventBus, raw: Raw, rate: int, seconds: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    key = bus.keys.stream("bench")
    await fresh(bus.redis, key)
    latencies: list[float] = []
    n = int(rate * seconds)
    counter = Counter(n)
    router = Router()

    @router.subscribe(name="bench-latency", concurrency=100)
    async def record(event: Payload) -> None:
        latencies.append((time.perf_counter_ns() - event.sent_ns) / 1e6)
        counter.add()

    worker = Worker(bus, router, settings=WorkerSettings(grace=5))
    await worker.start()
    await paced(lambda i: bus.publish(payload(i, time.perf_counter_ns())), rate, seconds)
    await counter.wait(60)
    await worker.stop()
    eb = percentiles(latencies)

    await fresh(bus.redis, key)
    raw_latencies: list[float] = []
    await bus.redis.xgroup_create(key, "raw", id="$", mkstream=True)

    def on_event(event: Payload) -> None:
        raw_latencies.append((time.perf_counter_ns() - event.sent_ns) / 1e6)

    consumer = asyncio.create_task(raw.consume("raw", n, on_event))

    async def pub(i: int) -> None:
        data = ENCODER.encode(payload(i, time.perf_counter_ns()))
        await raw.client.xadd(key, {"type": "Payload", "data": data})

    await paced(pub, rate, seconds)
    await consumer
    await fresh(bus.redis, key)
    return eb, percentiles(raw_latencies)


# -- FastStream (optional peer) -----------------------------------------------------------


async def faststream_drain(url: str, n: int) -> float | None:
    try:
        from faststream.redis import RedisBroker, StreamSub
    except ImportError:
        print("  (FastStream not installed: pip install 'eventbus[bench]')", file=sys.stderr)
        return None
    stream = "fs-bench"
    broker = RedisBroker(url, logger=None)
    done = asyncio.Event()
    count = 0

    @broker.subscriber(stream=StreamSub(stream, group="fs", consumer="c1", last_id="0"))
    async def handle(event: dict[str, object]) -> None:
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    await broker.connect()
    client = Redis.from_url(url)
    await client.delete(stream)
    for i in range(n):
        await broker.publish(msgspec.to_builtins(payload(i)), stream=stream)
    start = time.perf_counter()
    await broker.start()
    await asyncio.wait_for(done.wait(), timeout=600)
    rate = n / (time.perf_counter() - start)
    await broker.stop()
    await client.delete(stream)
    await client.aclose()
    return rate


# -- main ---------------------------------------------------------------------------------


def best(values: list[float], higher_is_better: bool = True) -> float:
    return max(values) if higher_is_better else min(values)


WORKLOADS = ("publish", "nowait", "drain", "e2e", "metrics", "latency", "validation")


async def run(args: argparse.Namespace, url: str) -> list[Result]:
    bus = EventBus.from_url(
        url,
        service="bench",
        prefix="bench",
        publishing=PublishSettings(buffer_size=args.publish_n * 8),
    )
    raw_client = Redis.from_url(url)
    raw = Raw(raw_client, bus.keys.stream("bench"))
    results: list[Result] = []
    try:
        for workload in args.only or WORKLOADS:
            for result in await WORKLOAD[workload](bus, raw, args, url):
                results.append(result)
                report(result)
    finally:
        await bus.aclose()
        await raw_client.aclose()
    return results


async def run_publish(bus: EventBus, raw: Raw, args: argparse.Namespace, url: str) -> list[Result]:
    out = []
    for name, batched, n in (
        ("publish, sequential", False, args.publish_n),
        ("publish, batched x100", True, args.publish_n * 4),
    ):
        rounds = [await bench_publish(bus, raw, n, batched) for _ in range(args.rounds)]
        out.append(Result(name, "events/s", rounds))
    return out


async def run_nowait(bus: EventBus, raw: Raw, args: argparse.Namespace, url: str) -> list[Result]:
    n = args.publish_n * 4
    rounds = [await bench_publish_nowait(bus, raw, n) for _ in range(args.rounds)]
    return [Result("publish_nowait vs pipeline", "events/s", rounds)]


async def run_drain(bus: EventBus, raw: Raw, args: argparse.Namespace, url: str) -> list[Result]:
    rounds = [await bench_drain(bus, raw, args.drain_n) for _ in range(args.rounds)]
    drain = Result("drain (no-op handler)", "events/s", rounds)
    if args.faststream:
        drain.faststream = await faststream_drain(url, min(args.drain_n, 20_000))
    return [drain]


async def run_e2e(bus: EventBus, raw: Raw, args: argparse.Namespace, url: str) -> list[Result]:
    rounds = [await bench_end_to_end(bus, raw, args.drain_n) for _ in range(args.rounds)]
    return [Result("end to end", "events/s", rounds)]


async def run_metrics(bus: EventBus, raw: Raw, args: argparse.Namespace, url: str) -> list[Result]:
    rounds = [
        await bench_metrics_cost(bus, args.drain_n, on_first=i % 2 == 0) for i in range(args.rounds)
    ]
    return [Result("end to end, metrics", "events/s", rounds, sides=("on", "off"))]


async def run_validation(
    bus: EventBus, raw: Raw, args: argparse.Namespace, url: str
) -> list[Result]:
    rounds = [
        await bench_validation(bus, args.publish_n, on_first=i % 2 == 0) for i in range(args.rounds)
    ]
    return [Result("publish, validation", "events/s", rounds, sides=("on", "off"))]


async def run_latency(bus: EventBus, raw: Raw, args: argparse.Namespace, url: str) -> list[Result]:
    lat = [await bench_latency(bus, raw, args.rate, args.seconds) for _ in range(args.rounds)]
    return [
        Result(f"latency {label} @ {args.rate}/s", "ms", [(r[0][i], r[1][i]) for r in lat],
               higher_is_better=False)
        for i, label in ((0, "p50"), (1, "p99"))
    ]  # fmt: skip


WORKLOAD = {
    "publish": run_publish, "nowait": run_nowait, "drain": run_drain, "e2e": run_e2e,
    "metrics": run_metrics, "latency": run_latency, "validation": run_validation,
}  # fmt: skip


def report(r: Result) -> None:
    peer = f"  faststream {r.faststream:>10,.0f}" if r.faststream else ""
    fmt = "{:>10,.0f}" if r.unit == "events/s" else "{:>10.3f}"
    print(
        f"  {r.name:<26} {r.sides[0]} {fmt.format(r.eventbus)}  {r.sides[1]} {fmt.format(r.raw)}"
        f" {r.unit:<9}"
        f"  ratio {r.ratio:5.2f}{peer}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="benchmark against this server instead")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--faststream", action="store_true", help="add FastStream as a peer")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", action="append", choices=WORKLOADS,
                        help="run only this workload (repeatable)")  # fmt: skip
    parser.add_argument("--publish-n", type=int, default=5_000)
    parser.add_argument("--drain-n", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.quick:
        args.publish_n, args.drain_n, args.seconds = 1_000, 5_000, 1.0
        args.rounds = min(args.rounds, 2)
    try:
        import uvloop

        loop_name = f"uvloop {uvloop.__version__}"
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        loop_name = "asyncio"
        runner = asyncio.Runner()
    server = None
    url = args.redis_url
    if url is None:
        server = RedisServer().start()
        url = server.url
    print(
        f"eventbus benchmark: Python {sys.version.split()[0]}, {loop_name}, "
        f"payload {PAYLOAD_BYTES} B, {os.cpu_count()} CPUs, {args.rounds} rounds "
        "(figures: best round; ratio: median of paired rounds)",
        flush=True,
    )
    try:
        with runner:
            runner.run(run(args, url))
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()

"""A chaos soak: workers and Redis are killed, stopped and restarted while events flow;
at the end, the delivery guarantees are checked on what Redis holds.

    python benchmarks/soak.py                      # 120 s of chaos, then drain and check
    python benchmarks/soak.py --duration 600 --rate 100
    python benchmarks/soak.py --seed 7 --log-dir /tmp/soak-logs

It starts its own redis-server (AOF, ``appendfsync always``) on a free port of
127.0.0.1, three worker processes of `benchmarks.soak_app` (``eventbus run``, stderr to
a log file each) and a publisher that publishes with keys, retrying a failed publish
with the same key (the dedup window makes that safe) and recording the events whose
publish returned. A chaos loop injects, at random intervals, in shuffled rounds of one
of each: SIGKILL a worker and restart it; SIGSTOP a worker past its lease, then
SIGCONT; SIGKILL Redis and restart it on the same port and data; SIGTERM a worker and
restart it; SIGKILL Redis while all workers but one are stopped, resuming them after
the restart and past their leases. Worker 0 is only ever stopped, never killed, so one
process lives through the whole run for the memory check.

Then publishing stops, the workers drain (waiting on conditions, with a deadline), stop
gracefully, and the checks run: every event handled by every group; the transactional
effect exactly once per event; nothing dead-lettered; the stream holding each event
once; worker RSS flat; every "claimed by another consumer" warning explained by a real
takeover or a lapsed lease; workers exiting 0 on SIGTERM and never dying on their own.
A table of the results is printed; the exit status is 1 when a check fails.
`tests/test_soak.py` runs it bounded (docs/soak.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from benchmarks.soak_app import (
    FLAKY_LAST_FAILING_ATTEMPT,
    SERVICE,
    STREAM,
    SoakEvent,
    flaky_fails,
)
from eventbus import EventBus, PublishError
from eventbus.keys import Keys
from eventbus.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
APP = "benchmarks.soak_app"
PREFIX = "soak"
GROUPS = ("plain", "exactly-once", "flaky")
FAULT_KINDS = ("kill-worker", "stop-worker", "kill-redis", "term-worker", "crash-stall")
TAKEOVER_WARNING = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) WARNING .*?(?P<group>\S+): (?:"
    r"(?P<id1>\d+-\d+) was claimed by another consumer"
    r"|lost the lease of (?P<id2>\d+-\d+) \(another consumer claimed it\)"
    r"|(?P<id3>\d+-\d+) was handled by another delivery of its key)"
)
# every line with one of these is a takeover warning, parsed by the pattern above or not
TAKEOVER_TEXTS = (
    "claimed by another consumer",
    "another consumer claimed it",
    "handled by another delivery of its key",
)
MIB = 1024 * 1024


@dataclass
class SoakConfig:
    duration_s: float = 120.0  # publishing under chaos; the drain comes after
    rate: float = 50.0  # events published per second
    workers: int = 3
    lease_s: float = 2.0
    seed: int | None = None
    max_faults: int = 100
    fault_gap_s: tuple[float, float] = (2.0, 6.0)  # pause between two faults
    drain_timeout_s: float = 90.0
    log_dir: Path | None = None  # None: a new temporary directory, kept
    # RSS check: the last quartile's median may exceed the first's by this much
    rss_slack_mib: float = 8.0
    rss_slack_ratio: float = 0.10
    rss_min_samples: int = 20  # lifetimes sampled fewer times (seconds) are not judged


@dataclass
class Fault:
    kind: str
    target: str
    start: float  # unix time
    end: float
    detail: str = ""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class SoakResult:
    config: SoakConfig
    seed: int
    log_dir: Path
    checks: list[Check]
    faults: list[Fault]
    figures: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def table(self) -> str:
        lines = [f"soak: seed {self.seed}, logs in {self.log_dir}", ""]
        width = max(len(k) for k in self.figures)
        lines += [f"  {k:<{width}}  {v}" for k, v in self.figures.items()]
        lines.append("")
        width = max(len(c.name) for c in self.checks)
        lines.append(f"  {'check':<{width}}  result  detail")
        lines += [
            f"  {c.name:<{width}}  {'ok' if c.ok else 'FAIL':<6}  {c.detail}" for c in self.checks
        ]
        lines += ["", "soak: " + ("all checks passed" if self.ok else f"{len(self.failed)} FAILED")]
        return "\n".join(lines)


# -- the worker processes ------------------------------------------------------------


@dataclass
class WorkerProcess:
    slot: int
    generation: int
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    started: float
    rss: list[tuple[float, int]] = field(default_factory=list)  # (unix time, bytes)
    stopped_by_us: bool = False  # SIGKILL/SIGTERM sent: an exit is expected
    exit_code: int | None = None

    @property
    def consumer(self) -> str:
        return f"w{self.slot}.{self.generation}"


class Fleet:
    """The worker processes, restarted into fresh consumers (``w<slot>.<generation>``)."""

    def __init__(self, url: str, config: SoakConfig, log_dir: Path) -> None:
        self.url = url
        self.config = config
        self.log_dir = log_dir
        self.current: dict[int, WorkerProcess] = {}
        self.all: list[WorkerProcess] = []
        self.unexpected_exits: list[str] = []
        self.term_exits: list[tuple[str, int]] = []

    def start(self, slot: int) -> WorkerProcess:
        generation = sum(1 for w in self.all if w.slot == slot)
        consumer = f"w{slot}.{generation}"
        log_path = self.log_dir / f"{consumer}.log"
        log_file = log_path.open("wb")
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "SOAK_CONSUMER": consumer,
            "SOAK_LEASE": str(self.config.lease_s),
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "eventbus.cli.main",
                "run",
                APP,
                "--redis-url",
                self.url,
                "--prefix",
                PREFIX,
                "--service",
                SERVICE,
                "--consumer",
                consumer,
                "--grace",
                "5",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        worker = WorkerProcess(slot, generation, process, log_path, log_file, time.time())
        self.current[slot] = worker
        self.all.append(worker)
        return worker

    def sample(self) -> None:
        """Record each live worker's RSS; restart (and note) any that died on its own."""
        now = time.time()
        for slot, worker in list(self.current.items()):
            code = worker.process.poll()
            if code is not None:
                if not worker.stopped_by_us:
                    worker.exit_code = code
                    self.unexpected_exits.append(f"{worker.consumer} exited {code}")
                    self.start(slot)
                continue
            rss = _rss_bytes(worker.process.pid)
            if rss is not None:
                worker.rss.append((now, rss))

    async def kill(self, slot: int) -> WorkerProcess:
        worker = self.current[slot]
        worker.stopped_by_us = True
        worker.process.kill()
        worker.exit_code = await asyncio.to_thread(worker.process.wait)
        return self.start(slot)

    async def running(self, worker: WorkerProcess, timeout: float = 60.0) -> bool:
        """Wait until the worker logged that it runs. Its signal handlers are installed
        before its groups start (eventbus.service.serve), but a SIGTERM during the
        interpreter's start-up and imports, before any event loop runs, still takes the
        default action."""
        needle = f"worker {worker.consumer} running".encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and worker.process.poll() is None:
            if needle in worker.log_path.read_bytes():
                return True
            await asyncio.sleep(0.1)
        return False

    async def terminate(self, slot: int, *, restart: bool = True) -> int:
        worker = self.current[slot]
        if not await self.running(worker):
            self.unexpected_exits.append(f"{worker.consumer} was not running after 60 s")
        worker.stopped_by_us = True
        worker.process.terminate()
        try:
            code = await asyncio.to_thread(worker.process.wait, 30)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            code = await asyncio.to_thread(worker.process.wait)
            self.unexpected_exits.append(f"{worker.consumer} ignored SIGTERM for 30 s")
        worker.exit_code = code
        self.term_exits.append((worker.consumer, code))
        if restart:
            self.start(slot)
        return code

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.terminate(s, restart=False) for s in list(self.current)))

    def close(self) -> None:
        for worker in self.all:
            if worker.process.poll() is None:
                with contextlib.suppress(OSError):
                    worker.process.send_signal(signal.SIGCONT)
                worker.process.kill()
                worker.process.wait()
            worker.log_file.close()


def _rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


# -- publisher and chaos -------------------------------------------------------------


@dataclass
class Published:
    numbers: list[int] = field(default_factory=list)
    stream_ids: dict[int, str] = field(default_factory=dict)
    failed_attempts: int = 0  # publishes that raised and were retried with the same key
    deduplicated: int = 0  # retries answered "already written" by the dedup window


async def publish_loop(bus: EventBus, config: SoakConfig, stop: asyncio.Event) -> Published:
    out = Published()
    loop = asyncio.get_running_loop()
    interval = 1.0 / config.rate
    due = loop.time()
    n = 0
    while not stop.is_set():
        while True:
            try:
                result = await bus.publish(SoakEvent(n=n, pad="x" * 64), key=f"soak-{n}")
                break
            except PublishError:
                out.failed_attempts += 1
                await asyncio.sleep(0.05)
        out.numbers.append(n)
        out.stream_ids[n] = str(result)
        out.deduplicated += result.duplicate
        n += 1
        due += interval
        delay = due - loop.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        else:
            due = loop.time()  # fell behind (an outage): do not burst to catch up
    return out


class Chaos:
    """The faults, one method each; each returns (target, detail) once it is over."""

    def __init__(
        self, fleet: Fleet, server: RedisServer, config: SoakConfig, rng: random.Random
    ) -> None:
        self.fleet = fleet
        self.server = server
        self.config = config
        self.rng = rng
        self.lease = config.lease_s

    def killable(self) -> int:
        """A worker slot to kill or terminate: never worker 0, whose one lifetime spans
        the run (the memory check)."""
        return self.rng.randrange(1, self.config.workers) if self.config.workers > 1 else 0

    async def kill_worker(self) -> tuple[str, str]:
        slot = self.killable()
        target = self.fleet.current[slot].consumer
        new = await self.fleet.kill(slot)
        return target, f"restarted as {new.consumer}"

    async def term_worker(self) -> tuple[str, str]:
        slot = self.killable()
        target = self.fleet.current[slot].consumer
        code = await self.fleet.terminate(slot)
        return target, f"exit {code}, restarted as {self.fleet.current[slot].consumer}"

    async def stop_worker(self) -> tuple[str, str]:
        worker = self.fleet.current[self.rng.randrange(self.config.workers)]
        pause = self.rng.uniform(1.5, 2.5) * self.lease
        with stopped([worker]):
            await asyncio.sleep(pause)
        return worker.consumer, f"stopped {pause:.1f}s (lease {self.lease:g}s)"

    async def kill_redis(self) -> tuple[str, str]:
        began = time.time()
        await self._redis_outage(self.rng.uniform(0.1, 2.5 * self.lease))
        return "redis", f"down {time.time() - began:.1f}s"

    async def crash_stall(self) -> tuple[str, str]:
        """Redis crashes while workers are stalled (all but one, SIGSTOP first); they
        resume past their leases, after the others took their entries over, on
        connections the crash broke: what they had read but not yet claimed meets an
        unreachable store (fail_open) while its entries are handled elsewhere."""
        slots = self.rng.sample(range(self.config.workers), max(1, self.config.workers - 1))
        workers = [self.fleet.current[s] for s in slots]
        began = time.time()
        with stopped(workers):
            await self._redis_outage(self.rng.uniform(1.0, 2.0) * self.lease)
            await asyncio.sleep(1.5 * self.lease)
        target = "+".join(w.consumer for w in workers)
        return target, f"stopped {time.time() - began:.1f}s around a Redis crash"

    async def _redis_outage(self, down_s: float) -> None:
        await asyncio.to_thread(self.server.kill)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.server.start, 30.0)


@contextlib.contextmanager
def stopped(workers: list[WorkerProcess]) -> Iterator[None]:
    """SIGSTOP the workers for the block; SIGCONT them whatever happens."""
    for worker in workers:
        worker.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.process.send_signal(signal.SIGCONT)


async def chaos_loop(chaos: Chaos, stop: asyncio.Event) -> list[Fault]:
    inject = {
        "kill-worker": chaos.kill_worker,
        "stop-worker": chaos.stop_worker,
        "kill-redis": chaos.kill_redis,
        "term-worker": chaos.term_worker,
        "crash-stall": chaos.crash_stall,
    }
    faults: list[Fault] = []
    kinds: list[str] = []
    while len(faults) < chaos.config.max_faults:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), chaos.rng.uniform(*chaos.config.fault_gap_s))
        if stop.is_set():
            break
        if not kinds:  # each round injects every kind once, in a random order
            kinds = list(FAULT_KINDS)
            chaos.rng.shuffle(kinds)
        kind = kinds.pop()
        start = time.time()
        target, detail = await inject[kind]()
        faults.append(Fault(kind, target, start, time.time(), detail))
        print(f"soak: fault {len(faults)}: {kind} {target} ({detail})", flush=True)
    return faults


async def sample_loop(fleet: Fleet, stop: asyncio.Event) -> None:
    while not stop.is_set():
        fleet.sample()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


# -- reading the outcome -------------------------------------------------------------


def group_name(handler: str) -> str:
    return f"{SERVICE}.{handler}"


async def int_hash(redis: Redis, key: str) -> dict[int, int]:
    return {int(k): int(v) for k, v in (await redis.hgetall(key)).items()}


async def counts(redis: Redis, keys: Keys) -> dict[str, dict[int, int]]:
    return {
        "plain": await int_hash(redis, f"{PREFIX}:plain"),
        "exactly-once": await int_hash(redis, f"{keys.stream(STREAM)}:app:effects"),
        "flaky": await int_hash(redis, f"{PREFIX}:flaky"),
    }


async def group_backlog(redis: Redis, keys: Keys) -> dict[str, tuple[int, int | None]]:
    """group -> (pending, lag) as XINFO GROUPS reports them."""
    out: dict[str, tuple[int, int | None]] = {}
    for info in await redis.xinfo_groups(keys.stream(STREAM)):
        name = info["name"].decode()
        lag = info.get("lag")
        out[name] = (int(info["pending"]), None if lag is None else int(lag))
    return out


async def drained(redis: Redis, keys: Keys, published: set[int]) -> bool:
    try:
        seen = await counts(redis, keys)
        backlog = await group_backlog(redis, keys)
    except (RedisError, OSError):
        return False
    if any(not published <= set(c) for c in seen.values()):
        return False
    return all(
        backlog.get(group_name(h), (1, 1)) == (0, 0) or backlog.get(group_name(h)) == (0, None)
        for h in GROUPS
    )


async def wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.5)
    return bool(await condition())


@dataclass(frozen=True)
class Start:
    group: str
    stream_id: str
    consumer: str
    attempt: int
    at: float


def text(value: bytes | str | None) -> str:
    """A reply as text; data from Redis never reaches the terminal raw (escaped)."""
    if value is None:
        return ""
    decoded = value.decode(errors="replace") if isinstance(value, bytes) else value
    return decoded.encode("unicode_escape").decode() if not decoded.isprintable() else decoded


async def entries_of(redis: Redis, key: str) -> list[dict[str, str]]:
    """The fields of every entry of a stream, as text."""
    entries = await redis.xrange(key) or []
    return [{text(k): text(v) for k, v in (fields or {}).items()} for _, fields in entries]


async def read_starts(redis: Redis) -> list[Start]:
    starts = []
    for raw in await redis.lrange(f"{PREFIX}:starts", 0, -1):
        group, stream_id, consumer, attempt, at = text(raw).split()
        starts.append(Start(group, stream_id, consumer, int(attempt), float(at)))
    return starts


@dataclass(frozen=True)
class Warning_:
    consumer: str
    group: str
    stream_id: str
    at: float
    line: str


def takeover_warnings(workers: list[WorkerProcess]) -> tuple[list[Warning_], int]:
    """The parsed "another consumer" warnings of every worker log, and how many such
    lines there are in all (a line the pattern misses still counts)."""
    parsed: list[Warning_] = []
    total = 0
    for worker in workers:
        for line in _lines(worker.log_path):
            if not any(text in line for text in TAKEOVER_TEXTS):
                continue
            total += 1
            match = TAKEOVER_WARNING.match(line)
            if match is None:
                continue
            at = datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            group = match["group"]
            stream_id = match["id1"] or match["id2"] or match["id3"]
            parsed.append(Warning_(worker.consumer, group, stream_id, at, line.strip()))
    return parsed, total


def _lines(path: Path) -> Iterator[str]:
    with path.open(errors="replace") as f:
        yield from f


def explain(
    warning: Warning_, starts: list[Start], faults: list[Fault], lease_s: float
) -> str | None:
    """Why the warning is real, or None when nothing explains it:

    - "takeover": another consumer started that entry on a later delivery (a higher
      attempt) before the warning;
    - "stopped": its consumer was SIGSTOPped while it held the entry (from a lease
      before its handler's start record), so its lease lapsed;
    - "redis down": Redis was down meanwhile long enough (half a lease) for leases to
      lapse.
    """
    slack = 0.05  # log times are truncated to the millisecond
    same = [
        s
        for s in starts
        if (s.group, s.stream_id) == (warning.group, warning.stream_id)
        and s.at <= warning.at + slack
    ]
    mine = [s for s in same if s.consumer == warning.consumer]
    latest = max(mine, key=lambda s: s.at) if mine else None
    attempt = latest.attempt if latest is not None else 0
    if any(s.consumer != warning.consumer and s.attempt > attempt for s in same):
        return "takeover"
    # the entry was read (or claimed) before its handler recorded a start
    held_since = (latest.at if latest is not None else warning.at) - lease_s
    for fault in faults:
        if not (fault.start <= warning.at and fault.end >= held_since):
            continue
        stalled = fault.target.split("+")
        if fault.kind in ("stop-worker", "crash-stall") and warning.consumer in stalled:
            return "stopped"
        if fault.kind in ("kill-redis", "crash-stall") and fault.end - fault.start >= lease_s / 2:
            return "redis down"
    return None


def warnings_report(
    warnings: list[Warning_], starts: list[Start], faults: list[Fault], lease_s: float
) -> str:
    """Each warning, its explanation and the start records of its entry (for a human)."""
    out = [f"{f.kind} {f.target} {f.start:.3f}-{f.end:.3f} {f.detail}" for f in faults]
    for w in warnings:
        out += ["", f"{explain(w, starts, faults, lease_s) or 'UNEXPLAINED'}: {w.line}"]
        out += [
            f"    start {s.group} {s.stream_id} {s.consumer} attempt {s.attempt} at {s.at:.3f}"
            for s in starts
            if (s.group, s.stream_id) == (w.group, w.stream_id)
        ]
    return "\n".join(out) + "\n"


def rss_check(workers: list[WorkerProcess], config: SoakConfig) -> tuple[Check, str]:
    judged, failures, summary = 0, [], []
    for worker in workers:
        samples = [rss for _, rss in worker.rss]
        # the first 10% is start-up (imports, pools, first batches), not a trend
        samples = samples[len(samples) // 10 :]
        if len(samples) < config.rss_min_samples:
            continue
        judged += 1
        quarter = len(samples) // 4
        first = statistics.median(samples[:quarter])
        last = statistics.median(samples[-quarter:])
        allowed = first * (1 + config.rss_slack_ratio) + config.rss_slack_mib * MIB
        text = f"{worker.consumer} {first / MIB:.1f}->{last / MIB:.1f} MiB ({len(samples)} s)"
        summary.append(text)
        if last > allowed:
            failures.append(text)
    if not judged:
        return Check("worker RSS flat", False, "no worker lived long enough to judge"), ""
    detail = (
        f"grew past first quartile +{config.rss_slack_ratio:.0%} +{config.rss_slack_mib:g} MiB: "
        + "; ".join(failures)
        if failures
        else f"{judged} lifetimes judged, first vs last quartile median within slack"
    )
    return Check("worker RSS flat", not failures, detail), "; ".join(summary[:4])


def count_lines(workers: list[WorkerProcess], needle: str) -> int:
    return sum(1 for w in workers for line in _lines(w.log_path) if needle in line)


async def evaluate(
    *,
    redis: Redis,
    keys: Keys,
    published: Published,
    fleet: Fleet,
    faults: list[Fault],
    config: SoakConfig,
) -> tuple[list[Check], dict[str, Any]]:
    numbers = set(published.numbers)
    total = len(published.numbers)
    seen = await counts(redis, keys)
    checks: list[Check] = []
    figures: dict[str, Any] = {}

    missing = {h: len(numbers - set(c)) for h, c in seen.items()}
    checks.append(
        Check(
            "every event handled by every group",
            not any(missing.values()),
            ", ".join(f"{h}: {total - m}/{total}" for h, m in missing.items()),
        )
    )

    effects = seen["exactly-once"]
    wrong = {n: effects.get(n, 0) for n in numbers if effects.get(n, 0) != 1}
    extra = set(effects) - numbers
    twice = sorted(n for n, c in wrong.items() if c > 1)
    detail = f"{total - len(wrong)}/{total} events have effect == 1"
    if wrong:
        detail += f"; missing: {sum(1 for c in wrong.values() if c == 0)}, more than once: "
        detail += f"{len(twice)} (e.g. {twice[:5]})"
    if extra:
        detail += f"; {len(extra)} effects of events never published"
    checks.append(Check("transactional effect exactly once", not wrong and not extra, detail))

    dlq = await entries_of(redis, keys.dlq(STREAM))
    reasons = Counter(f"{f.get('dlq_group')}: {f.get('dlq_reason')}" for f in dlq)
    checks.append(
        Check(
            "nothing dead-lettered",
            not dlq,
            "dead-letter stream empty" if not dlq else f"{len(dlq)} entries: {dict(reasons)}",
        )
    )

    entries = await entries_of(redis, keys.stream(STREAM))
    entry_keys = Counter(f.get("key", "") for f in entries)
    doubled = sorted(k for k, c in entry_keys.items() if c > 1)
    ok = len(entries) == total and not doubled
    checks.append(
        Check(
            "stream length == published",
            ok,
            f"XLEN {len(entries)}, published {total}, keys written twice: {len(doubled)}"
            + (f" (e.g. {doubled[:3]})" if doubled else ""),
        )
    )

    backlog = await group_backlog(redis, keys)
    left = {g: b for g, b in backlog.items() if b[0] or b[1]}
    checks.append(
        Check(
            "drained (nothing pending or unread)",
            not left,
            "all groups at pending 0, lag 0" if not left else f"(pending, lag): {left}",
        )
    )

    rss, rss_summary = rss_check(fleet.all, config)
    checks.append(rss)

    starts = await read_starts(redis)
    warnings, lines = takeover_warnings(fleet.all)
    reasons_ = Counter(
        explain(w, starts, faults, config.lease_s) or "UNEXPLAINED" for w in warnings
    )
    unexplained = [w for w in warnings if explain(w, starts, faults, config.lease_s) is None]
    unparsed = lines - len(warnings)
    report = fleet.log_dir / "warnings.txt"
    report.write_text(warnings_report(warnings, starts, faults, config.lease_s))
    detail = f"{lines} warnings: " + (
        ", ".join(f"{k} {v}" for k, v in sorted(reasons_.items())) or "none"
    )
    if unparsed:
        detail += f", {unparsed} not parsed"
    if unexplained:
        w = unexplained[0]
        detail += f"; first unexplained: {w.consumer}: {w.line[:160]} (all: {report})"
    checks.append(
        Check(
            "takeover warnings only on real takeovers",
            not unexplained and not unparsed,
            detail,
        )
    )

    kinds = Counter(f.kind for f in faults)
    absent = [k for k in FAULT_KINDS if not kinds[k]]
    checks.append(
        Check(
            "every kind of fault injected",
            not absent,
            f"{len(faults)} faults" + (f"; never: {', '.join(absent)}" if absent else ""),
        )
    )

    bad_terms = [f"{c} exit {code}" for c, code in fleet.term_exits if code != 0]
    problems = fleet.unexpected_exits + bad_terms
    checks.append(
        Check(
            "workers exit 0 on SIGTERM, never on their own",
            not problems,
            f"{len(fleet.term_exits)} SIGTERM exits all 0, no unexpected exit"
            if not problems
            else "; ".join(problems),
        )
    )

    runs = await int_hash(redis, f"{PREFIX}:runs")
    handlings = Counter(s.group for s in starts)
    figures["events published"] = total
    figures["publish failures retried"] = (
        f"{published.failed_attempts} (retries answered by the dedup window: "
        f"{published.deduplicated})"
    )
    figures["faults injected"] = f"{len(faults)}: " + ", ".join(
        f"{k} {kinds[k]}" for k in FAULT_KINDS
    )
    figures["handler starts"] = ", ".join(f"{h} {handlings[group_name(h)]}" for h in GROUPS)
    figures["exactly-once runs"] = (
        f"{sum(runs.values())} for {total} events; events run more than once: "
        f"{sum(1 for v in runs.values() if v > 1)}"
    )
    number_of = {stream_id: n for n, stream_id in published.stream_ids.items()}
    designed = sum(
        1
        for s in starts
        if s.group == group_name("flaky")
        and s.stream_id in number_of
        and flaky_fails(number_of[s.stream_id], s.attempt)
    )
    figures["flaky designed failures"] = (
        f"{designed} (never past attempt {FLAKY_LAST_FAILING_ATTEMPT})"
    )
    figures["worker lifetimes"] = len(fleet.all)
    figures["worker RSS"] = rss_summary or "-"
    figures["takeover warning lines"] = lines
    figures["commit failed lines"] = count_lines(fleet.all, "it will be settled on redelivery")
    figures["unguarded runs (fail_open) lines"] = count_lines(fleet.all, "unguarded")
    figures["Traceback lines"] = count_lines(fleet.all, "Traceback")
    return checks, figures


# -- the run -------------------------------------------------------------------------


async def run_soak(config: SoakConfig) -> SoakResult:
    seed = config.seed if config.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix="eventbus-soak-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    data_dir = log_dir / "redis"
    data_dir.mkdir(exist_ok=True)
    server = RedisServer(appendonly=True, data_dir=data_dir)
    await asyncio.to_thread(server.start)
    fleet = Fleet(server.url, config, log_dir)
    bus = EventBus.from_url(server.url, service="soak-publisher", prefix=PREFIX)
    # the soak's own reads ride out a Redis restart
    redis = Redis.from_url(
        server.url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 20),
        retry_on_error=[RedisConnectionError],
    )
    keys = Keys(PREFIX)
    began = time.time()
    try:
        for slot in range(config.workers):
            fleet.start(slot)
        if not await wait_until(lambda: groups_exist(redis, keys), 60):
            raise RuntimeError("the workers did not create their groups within 60 s")
        print(
            f"soak: seed {seed}, {config.workers} workers up, publishing for "
            f"{config.duration_s:g}s at {config.rate:g}/s; logs in {log_dir}",
            flush=True,
        )
        stop, sampling = asyncio.Event(), asyncio.Event()
        sampler = asyncio.create_task(sample_loop(fleet, sampling))
        publisher = asyncio.create_task(publish_loop(bus, config, stop))
        chaos = asyncio.create_task(chaos_loop(Chaos(fleet, server, config, rng), stop))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(publisher), config.duration_s)
        stop.set()
        published = await publisher
        faults = await chaos
        drain_began = time.time()
        numbers = set(published.numbers)
        print(f"soak: {len(numbers)} published, {len(faults)} faults; draining", flush=True)
        was_drained = await wait_until(
            lambda: drained(redis, keys, numbers), config.drain_timeout_s
        )
        drain_s = time.time() - drain_began
        sampling.set()
        await sampler
        await fleet.stop_all()
        checks, figures = await evaluate(
            redis=redis, keys=keys, published=published, fleet=fleet, faults=faults, config=config
        )
        figures = {
            "duration": f"{drain_began - began:.0f}s of chaos, drained in {drain_s:.1f}s"
            + ("" if was_drained else f" (NOT drained within {config.drain_timeout_s:g}s)"),
            **figures,
        }
        return SoakResult(config, seed, log_dir, checks, faults, figures)
    finally:
        fleet.close()
        await bus.aclose()
        await redis.aclose()
        server.close()


async def groups_exist(redis: Redis, keys: Keys) -> bool:
    try:
        backlog = await group_backlog(redis, keys)
    except Exception:
        return False
    return all(group_name(h) in backlog for h in GROUPS)


def parse_args(argv: list[str] | None = None) -> SoakConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="seconds of publishing under chaos (default 120)",
    )
    parser.add_argument("--rate", type=float, default=50.0, help="events per second (50)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (3)")
    parser.add_argument(
        "--lease", type=float, default=2.0, metavar="SECONDS", help="the handlers' lease (2)"
    )
    parser.add_argument("--seed", type=int, help="seed of the chaos (default: random)")
    parser.add_argument("--max-faults", type=int, default=100, help="at most this many (100)")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="how long the workers get to drain after publishing (90)",
    )
    parser.add_argument("--log-dir", type=Path, help="worker logs (default: a new temp dir)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.workers < 1 or args.lease < 1:
        parser.error("--duration and --rate must be positive, --workers >= 1, --lease >= 1")
    return SoakConfig(
        duration_s=args.duration,
        rate=args.rate,
        workers=args.workers,
        lease_s=args.lease,
        seed=args.seed,
        max_faults=args.max_faults,
        drain_timeout_s=args.drain_timeout,
        log_dir=args.log_dir,
    )


def main(argv: list[str] | None = None) -> int:
    result = asyncio.run(run_soak(parse_args(argv)))
    print(result.table())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

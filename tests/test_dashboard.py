"""The dashboard and the alerts are real: every panel's query returns data from a real
Prometheus scraping real workers, and promtool accepts and tests the alert rules."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventbus import EventBus
from eventbus.testing import wait_for
from eventbus.testing.server import free_port
from tests.apps.obs_app import Order
from tests.conftest import Processes

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
OPERATIONS = ROOT / "docs" / "operations.md"
pytestmark = pytest.mark.timeout(180)


def dashboard() -> dict[str, Any]:
    return dict(json.loads((DASHBOARDS / "eventbus.json").read_text()))


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_is_generated_and_complete() -> None:
    sys.path.insert(0, str(DASHBOARDS))
    try:
        import build_dashboard
    finally:
        sys.path.remove(str(DASHBOARDS))
    assert (DASHBOARDS / "eventbus.json").read_text() == build_dashboard.render(), (
        "dashboards/eventbus.json is stale: run python dashboards/build_dashboard.py"
    )
    found = panels()
    assert len(found) >= 16
    titles = " / ".join(p["title"] for p in found).lower()
    for needed in ("publish rate", "handle rate", "error ratio", "handler duration",
                   "event age", "lag", "pending", "oldest pending", "dead letters",
                   "dead-letter growth", "reclaims", "duplicates", "buffer", "dropped",
                   "in flight", "consumers", "schedule fires", "since last fire",
                   "stream length"):  # fmt: skip
        assert needed in titles, needed
    variables = {v["name"] for v in dashboard()["templating"]["list"]}
    assert {"stream", "group", "datasource"} <= variables
    templated = [p for p in found if any("$stream" in t["expr"] for t in p["targets"])]
    assert len(templated) >= 12


def tool(name: str) -> str:
    """The binary's path; skipped where it is missing, except in CI, which installs it."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not installed (.ci/run installs Debian's prometheus package)"
        if os.environ.get("EVENTBUS_TEST_REQUIRE_PROMETHEUS"):
            pytest.fail(reason + "; EVENTBUS_TEST_REQUIRE_PROMETHEUS is set")
        pytest.skip(reason)
    return path


def promtool() -> str:
    return tool("promtool")


def test_alert_rules_pass_promtool() -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", "alerts.yaml"], cwd=DASHBOARDS,
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 9 rules found" in check.stdout
    tests = subprocess.run([tool, "test", "rules", "alerts_test.yaml"], cwd=DASHBOARDS,
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    tested = (DASHBOARDS / "alerts_test.yaml").read_text().count("alertname:")
    assert tested >= 3


def test_every_alert_has_a_runbook_in_the_docs() -> None:
    rules = yaml.safe_load((DASHBOARDS / "alerts.yaml").read_text())["groups"][0]["rules"]
    headings = set(re.findall(r"^### (\w+)$", OPERATIONS.read_text(), flags=re.MULTILINE))
    for rule in rules:
        name = rule["alert"]
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert name in headings, f"docs/operations.md has no '### {name}' runbook"


def test_every_metric_is_documented() -> None:
    source = "".join(p.read_text() for p in sorted((ROOT / "eventbus" / "metrics").glob("*.py")))
    declared = set(re.findall(r'"(eventbus_[a-z_]+)"', source))
    assert len(declared) >= 19
    documented = set(re.findall(r"`(eventbus_[a-z_]+)`", OPERATIONS.read_text()))
    for name in declared:  # counters are declared without the _total prometheus adds
        assert name in documented or f"{name}_total" in documented, name


class Prometheus:
    """A real Prometheus on a free port, scraping the given targets every second."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, targets: list[str]) -> None:
        config = self.workdir / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DASHBOARDS / "alerts.yaml")],
            "scrape_configs": [{"job_name": "eventbus",
                                "static_configs": [{"targets": targets}]}],
        }))  # fmt: skip
        self.log = (self.workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={config}",
             f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.log.close()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tool("prometheus"), tmp_path)
    yield server
    server.stop()


def query(port: int, expr: str) -> list[Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def label_values(port: int, label: str, match: str) -> list[str]:
    url = (f"http://127.0.0.1:{port}/api/v1/label/{label}/values?"
           + urllib.parse.urlencode({"match[]": match}))  # fmt: skip
    with urllib.request.urlopen(url, timeout=5) as response:
        return list(json.loads(response.read())["data"])


async def returns_data(port: int, expr: str) -> bool:
    try:
        return bool(await asyncio.to_thread(query, port, expr))
    except OSError:
        return False


def as_instant(expr: str) -> str:
    """A panel's expression as Grafana would send it, with every stream and group."""
    return (expr.replace("$__rate_interval", "20s").replace('"$stream"', '".*"')
            .replace('"$group"', '".*"'))  # fmt: skip


async def test_every_panel_query_returns_data(
    prometheus: Prometheus,
    processes: Processes,
    eventbus_redis_url: str,
    eventbus_prefix: str,
    bus: EventBus,
) -> None:
    port = prometheus.port
    metrics_ports = [free_port(), free_port()]
    for i, metrics_port in enumerate(metrics_ports):  # two replicas: worker and scheduler
        processes.eventbus(
            "run", "tests.apps.obs_app", "--redis-url", eventbus_redis_url,
            "--prefix", eventbus_prefix, "--service", "shop", "--consumer", f"w{i}",
            "--metrics-port", str(metrics_port),
        )  # fmt: skip
    prometheus.start([f"127.0.0.1:{p}" for p in metrics_ports])
    await wait_for(lambda: returns_data(port, 'up{job="eventbus"} == 1'), timeout=60,
                   message="Prometheus scraping the workers")  # fmt: skip

    async def workload() -> None:
        n = 0
        while True:
            batch = [Order(n=n + i, poison=(n + i) % 25 == 0) for i in range(20)]
            await bus.publish_many(batch)
            # the same logical order twice: the idempotent group sees a duplicate
            await bus.publish(Order(n=n), key=f"order-{n}", dedup_window=0)
            await bus.publish(Order(n=n), key=f"order-{n}", dedup_window=0)
            n += 20
            await asyncio.sleep(0.2)

    load = asyncio.create_task(workload())
    try:
        for panel in panels():
            for target in panel["targets"]:
                expr = as_instant(target["expr"])
                await wait_for(lambda e=expr: returns_data(port, e), timeout=60,
                               message=f"data for panel {panel['title']!r}: {expr}")  # fmt: skip
        for variable, match in (("stream", "eventbus_stream_length"),
                                ("group", 'eventbus_group_pending{stream=~".*"}')):  # fmt: skip
            assert await asyncio.to_thread(label_values, port, variable, match)
    finally:
        load.cancel()
        await asyncio.wait({load})

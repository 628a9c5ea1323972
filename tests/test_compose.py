"""compose.yaml: no Docker engine runs here, so its structure is checked instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text()))


def test_services_ports_and_volumes() -> None:
    services = compose()["services"]
    assert {"redis", "worker", "scheduler", "prometheus", "grafana", "jaeger"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]  # persistence: nothing lost
    assert services["worker"]["command"][:2] == ["run", "handlers"]
    assert services["scheduler"]["command"][:2] == ["scheduler", "handlers"]
    for app in ("worker", "scheduler"):
        env = services[app]["environment"]
        assert env["EVENTBUS_REDIS_URL"].startswith("redis://redis:")
        assert env["EVENTBUS_METRICS_PORT"] == "9464"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    ports = {s: svc.get("ports", []) for s, svc in services.items()}
    assert "9090:9090" in ports["prometheus"] and "3000:3000" in ports["grafana"]
    assert "16686:16686" in ports["jaeger"]
    assert set(compose()["volumes"]) == {"redis-data", "prometheus-data"}


def test_mounted_files_exist() -> None:
    for service in compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    assert (ROOT / "Dockerfile").exists()


def test_prometheus_scrapes_the_apps_and_loads_the_alerts() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yaml"]
    [job] = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["worker:9464", "scheduler:9464"]
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert "./dashboards/alerts.yaml:/etc/prometheus/alerts.yaml:ro" in mounts


def test_grafana_provisions_the_dashboard_and_datasources() -> None:
    provisioning = ROOT / "deploy/grafana/provisioning"
    sources = yaml.safe_load((provisioning / "datasources/prometheus.yaml").read_text())
    uids = {s["uid"]: s["url"] for s in sources["datasources"]}
    assert uids["prometheus"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards/eventbus.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./dashboards:{path}:ro" in mounts
    assert (ROOT / "dashboards/eventbus.json").exists()

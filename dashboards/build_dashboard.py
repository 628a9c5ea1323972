"""Writes eventbus.json, the Grafana dashboard (run it after editing the panels here;
tests/test_dashboard.py checks the JSON is what this produces).

    python dashboards/build_dashboard.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SEL = 'stream=~"$stream"'
GSEL = 'stream=~"$stream", group=~"$group"'
RATE = "[$__rate_interval]"

# (row, title, unit, description, [(legend, expr)], kind). The figures read from Redis are
# the same in every replica's scrape: max by (...) shows each once.
PANELS: list[tuple[str, str, str, str, list[tuple[str, str]], str]] = [
    ("Throughput", "Publish rate", "ops",
     "Events written per second, by stream.",
     [("{{stream}}", f'sum by (stream) (rate(eventbus_events_published_total{{{SEL}, outcome="ok"}}{RATE}))')],
     "timeseries"),
    ("Throughput", "Handle rate by outcome", "ops",
     "Deliveries settled per second: ok, error (failed attempts), dead, duplicate, skipped.",
     [("{{outcome}}", f"sum by (outcome) (rate(eventbus_events_handled_total{{{GSEL}}}{RATE}))")],
     "timeseries"),
    ("Throughput", "Error ratio", "percentunit",
     "Failed attempts and dead letters over all deliveries.",
     [("{{group}}", f'sum by (group) (rate(eventbus_events_handled_total{{{GSEL}, outcome=~"error|dead"}}{RATE})) / clamp_min(sum by (group) (rate(eventbus_events_handled_total{{{GSEL}, outcome=~"ok|error|dead"}}{RATE})), 1e-9)')],
     "timeseries"),
    ("Latency", "Handler duration p50 / p95 / p99", "s",
     "How long handlers run.",
     [(f"p{q} {{{{group}}}}", f"histogram_quantile(0.{q}, sum by (le, group) (rate(eventbus_handler_duration_seconds_bucket{{{GSEL}}}{RATE})))")
      for q in ("50", "95", "99")],
     "timeseries"),
    ("Latency", "Event age at handling (end-to-end latency)", "s",
     "From publish (the stream id's clock) to the handler's start: queueing plus delivery.",
     [(f"p{q} {{{{group}}}}", f"histogram_quantile(0.{q}, sum by (le, group) (rate(eventbus_event_age_seconds_bucket{{{GSEL}}}{RATE})))")
      for q in ("50", "99")],
     "timeseries"),
    ("Latency", "Publish latency p99", "s",
     "Time to Redis's reply per publish call (publish_nowait: per batch).",
     [("{{method}}", f"histogram_quantile(0.99, sum by (le, method) (rate(eventbus_publish_duration_seconds_bucket{RATE})))")],
     "timeseries"),
    ("Backlog", "Lag per group", "short",
     "Entries each group has not read yet (from Redis).",
     [("{{stream}} / {{group}}", f"max by (stream, group) (eventbus_group_lag{{{GSEL}}})")], "timeseries"),
    ("Backlog", "Pending per group", "short",
     "Entries read and not yet acknowledged: in flight, or waiting for a retry.",
     [("{{stream}} / {{group}}", f"max by (stream, group) (eventbus_group_pending{{{GSEL}}})")], "timeseries"),
    ("Backlog", "Oldest pending age", "s",
     "Age of each group's oldest unacknowledged entry.",
     [("{{stream}} / {{group}}", f"max by (stream, group) (eventbus_group_oldest_pending_seconds{{{GSEL}}})")],
     "timeseries"),
    ("Backlog", "Stream length", "short",
     "Entries in each stream.",
     [("{{stream}}", f"max by (stream) (eventbus_stream_length{{{SEL}}})")], "timeseries"),
    ("Failures", "Dead letters", "short",
     "Entries in each stream's dead-letter stream.",
     [("{{stream}}", f"max by (stream) (eventbus_dlq_length{{{SEL}}})")], "stat"),
    ("Failures", "Dead-letter growth (15m)", "short",
     "Entries dead-lettered over the last 15 minutes, by group (counted by the workers, so a dead-letter cap does not hide them).",
     [("{{group}}", f'sum by (group) (increase(eventbus_events_handled_total{{{GSEL}, outcome="dead"}}[15m]))')], "timeseries"),
    ("Failures", "Reclaims", "ops",
     "Entries claimed by XAUTOCLAIM per second: retries after backoff and crash recovery.",
     [("{{group}}", f"sum by (group) (rate(eventbus_messages_reclaimed_total{{{GSEL}}}{RATE}))")],
     "timeseries"),
    ("Failures", "Duplicates suppressed", "ops",
     "Idempotent deliveries acknowledged unrun, and keyed publishes deduplicated.",
     [("handled {{group}}", f'sum by (group) (rate(eventbus_events_handled_total{{{GSEL}, outcome="duplicate"}}{RATE}))'),
      ("published {{stream}}", f'sum by (stream) (rate(eventbus_events_published_total{{{SEL}, outcome="duplicate"}}{RATE}))')],
     "timeseries"),
    ("Publishing", "Fire-and-forget buffer", "short",
     "Events publish_nowait holds, not yet written.",
     [("{{instance}}", "eventbus_publish_buffer_events")], "timeseries"),
    ("Publishing", "Dropped events (5m)", "short",
     "publish_nowait events given up: buffer full, or deadline passed while Redis was away.",
     [("{{stream}}", f"sum by (stream) (increase(eventbus_publish_dropped_total{{{SEL}}}[5m]))")],
     "timeseries"),
    ("Workers", "Handlers in flight", "short",
     "Handlers running now, per group (all workers).",
     [("{{group}}", f"sum by (group) (eventbus_handlers_in_flight{{{GSEL}}})")], "timeseries"),
    ("Workers", "Consumers per group", "short",
     "Consumers registered in each group (Redis).",
     [("{{stream}} / {{group}}", f"max by (stream, group) (eventbus_group_consumers{{{GSEL}}})")], "timeseries"),
    ("Workers", "Redis reachable", "short",
     "1 when each process's last scrape read its queue figures from Redis, 0 when it could not.",
     [("{{instance}}", "min by (instance) (eventbus_redis_up)")], "stat"),
    ("Schedules", "Schedule fires (5m)", "short",
     "Ticks by outcome: fired, duplicate (another replica fired), skipped, error.",
     [("{{schedule}} {{outcome}}", "sum by (schedule, outcome) (increase(eventbus_schedule_fires_total[5m]))")],
     "timeseries"),
    ("Schedules", "Time since last fire", "s",
     "Seconds since any replica last fired each schedule.",
     [("{{schedule}}", "time() - max by (schedule) (eventbus_schedule_last_fire_timestamp_seconds)")],
     "stat"),
]  # fmt: skip


def panel(
    pid: int, x: int, y: int, title: str, unit: str, desc: str,
    targets: list[tuple[str, str]], kind: str,
) -> dict[str, Any]:  # fmt: skip
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y, pid, row = 0, 1, None
    column = 0
    for row_title, title, unit, desc, targets, kind in PANELS:
        if row_title != row:
            if column:
                y += 8
            panels.append(
                {
                    "id": pid,
                    "type": "row",
                    "title": row_title,
                    "collapsed": False,
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                    "panels": [],
                }
            )
            pid, y, column, row = pid + 1, y + 1, 0, row_title
        panels.append(panel(pid, column * 8, y, title, unit, desc, targets, kind))
        pid += 1
        column = (column + 1) % 3
        if column == 0:
            y += 8
    return {
        "uid": "eventbus",
        "title": "eventbus",
        "description": "Streams, groups, handlers, publishers and schedules of eventbus.",
        "tags": ["eventbus", "redis", "streams"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                },
                variable("stream", "label_values(eventbus_stream_length, stream)"),
                variable("group", 'label_values(eventbus_group_pending{stream=~"$stream"}, group)'),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    Path(__file__).with_name("eventbus.json").write_text(render())

"""`eventbus run --otel` exports spans over OTLP/HTTP: a real worker process, a real
receiver (an HTTP server decoding the OTLP protobuf requests), a real Redis."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from eventbus import EventBus
from eventbus.testing import wait_for
from tests.apps.obs_app import Order
from tests.conftest import Processes, output_of

pytestmark = pytest.mark.timeout(120)


class Receiver:
    """An OTLP/HTTP trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, SpanProto]] = []  # (service.name, span)
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append(self.path)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    attrs = {a.key: a.value.string_value
                             for a in resource_spans.resource.attributes}  # fmt: skip
                    for scope in resource_spans.scope_spans:
                        receiver.spans.extend((attrs["service.name"], s) for s in scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def named(self, name: str) -> list[SpanProto]:
        return [s for _, s in self.spans if s.name == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def attributes(span: SpanProto) -> dict[str, object]:
    out: dict[str, object] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind) if kind else None
    return out


async def test_run_with_otel_exports_consumer_spans_and_their_children(
    receiver: Receiver,
    processes: Processes,
    eventbus_redis_url: str,
    eventbus_prefix: str,
    bus: EventBus,
) -> None:
    worker = processes.eventbus(
        "run", "tests.apps.obs_app", "--redis-url", eventbus_redis_url,
        "--prefix", eventbus_prefix, "--service", "shop", "--no-scheduler",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 0.1 s, not 5 s
            "OTEL_SERVICE_NAME": "shop-worker",  # wins over --service, as operators expect
        },
    )  # fmt: skip

    async def groups_ready() -> bool:
        try:
            return len(await bus.redis.xinfo_groups(bus.keys.stream("orders"))) >= 4
        except Exception:
            return False

    await wait_for(groups_ready, timeout=30, message="the worker's groups")
    stream_id = await bus.publish(Order(n=7))

    def exported() -> bool:
        # the accept handler forwards a Receipt with publish_nowait: a PRODUCER span
        # nested in its delivery's CONSUMER span, exported by the same process
        return len(receiver.named("orders process")) >= 4 and bool(
            receiver.named("receipts publish")
        )

    await wait_for(exported, timeout=30, message="spans at the OTLP receiver")
    assert worker.poll() is None, output_of(worker)
    assert set(receiver.paths) == {"/v1/traces"}
    assert {service for service, _ in receiver.spans} == {"shop-worker"}

    processing = receiver.named("orders process")
    groups = {attributes(s)["messaging.consumer.group.name"] for s in processing}
    assert {"shop.accept", "shop.flaky", "shop.strict", "shop.once"} <= groups
    accept = next(s for s in processing
                  if attributes(s)["messaging.consumer.group.name"] == "shop.accept")  # fmt: skip
    assert accept.kind == SpanProto.SpanKind.SPAN_KIND_CONSUMER
    attrs = attributes(accept)
    assert attrs["eventbus.stream_id"] == stream_id
    assert attrs["eventbus.delivery_count"] == 1
    assert attrs["messaging.system"] == "redis"
    assert attrs["messaging.destination.name"] == "orders"

    [forward] = receiver.named("receipts publish")
    assert forward.kind == SpanProto.SpanKind.SPAN_KIND_PRODUCER
    assert forward.trace_id == accept.trace_id
    assert forward.parent_span_id == accept.span_id


def test_the_standard_variables_name_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventbus.tracing import resource_attributes

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert resource_attributes("shop") == {"service.name": "shop"}
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    assert resource_attributes("shop") == {"service.name": "shop"}
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=billing,team=x")
    assert resource_attributes("shop") == {}
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop-scheduler")
    assert resource_attributes("shop") == {}

"""OpenTelemetry tracing: a PRODUCER span per publish, a CONSUMER span per delivery.

Only the OpenTelemetry API is used here; with no SDK configured (no TracerProvider set)
nothing is recorded and the hot paths skip tracing entirely. The trace context travels
in the envelope's ``traceparent`` / ``tracestate`` fields (W3C), so a delivery's span is
a child of the publish that produced it, across processes and hosts.

Attributes follow the OpenTelemetry messaging semantic conventions
(``messaging.system``, ``messaging.destination.name``, ``messaging.consumer.group.name``,
``messaging.message.id``, ``messaging.operation.type``/``.name``) plus the stream id and
the delivery count (``eventbus.stream_id``, ``eventbus.delivery_count``).

``setup_from_env()`` (``eventbus run --otel``) installs the SDK with an OTLP/HTTP
exporter configured by the standard ``OTEL_*`` variables (the ``otel`` extra).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import context, propagate, trace
from opentelemetry.trace import ProxyTracerProvider, Span, SpanKind, Status, StatusCode

from eventbus.errors import ConfigurationError

if TYPE_CHECKING:
    from eventbus.envelope import Envelope

log = logging.getLogger("eventbus.tracing")

SYSTEM = "redis"
_tracer = trace.get_tracer("eventbus")


def active() -> bool:
    """True when an SDK TracerProvider is installed (else tracing is skipped)."""
    return not isinstance(
        trace.get_tracer_provider(), (ProxyTracerProvider, trace.NoOpTracerProvider)
    )


def start_publish(stream: str, type_name: str, *, operation: str = "publish") -> Span:
    """A PRODUCER span for publishing one event; make it current to inject its context."""
    return _tracer.start_span(
        f"{stream} {operation}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.destination.name": stream,
            "messaging.operation.type": "send",
            "messaging.operation.name": operation,
            "eventbus.event_type": type_name,
        },
    )


def carrier_of(span: Span) -> tuple[str | None, str | None]:
    """The W3C traceparent and tracestate of `span`, for the envelope."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent"), carrier.get("tracestate") or None


def finish(span: Span, event_id: str | None, error: BaseException | None = None) -> None:
    if event_id:
        span.set_attribute("messaging.message.id", event_id)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)))
    span.end()


@contextmanager
def processing(
    envelope: Envelope, *, stream: str, group: str, delivery_count: int
) -> Iterator[Span]:
    """A CONSUMER span for one delivery, child of the publisher's span, current while
    the handler runs (its own spans nest under it)."""
    carrier = {"traceparent": envelope.traceparent or ""}
    if envelope.tracestate:
        carrier["tracestate"] = envelope.tracestate
    parent = propagate.extract(carrier) if envelope.traceparent else context.Context()
    span = _tracer.start_span(
        f"{stream} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.destination.name": stream,
            "messaging.consumer.group.name": group,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.id": envelope.id or envelope.stream_id,
            "eventbus.stream_id": envelope.stream_id,
            "eventbus.delivery_count": delivery_count,
            "eventbus.event_type": envelope.type,
        },
    )
    with trace.use_span(span, end_on_exit=False, record_exception=False):
        yield span


def failed(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def resource_attributes(service: str) -> dict[str, str]:
    """``service.name`` = `service`, unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES
    names one (the standard variables win, as operators expect)."""
    if os.environ.get("OTEL_SERVICE_NAME"):
        return {}
    declared = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if any(part.split("=", 1)[0].strip() == "service.name" for part in declared.split(",")):
        return {}
    return {"service.name": service}


def setup_from_env(service: str) -> None:
    """Install the SDK with an OTLP/HTTP exporter (``OTEL_EXPORTER_OTLP_ENDPOINT`` etc.)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigurationError(
            "tracing export needs the SDK and the OTLP exporter: pip install 'eventbus[otel]'"
        ) from None
    provider = TracerProvider(resource=Resource.create(resource_attributes(service)))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing: exporting spans over OTLP/HTTP as service %r", service)

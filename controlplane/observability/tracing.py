"""OpenTelemetry tracing (architecture/slos.md): from the API request through the UnitOfWork and the
relay to the consumer, one trace.

The path of a trace:

    HTTP request span (FastAPI's own, `PUT /api/v1/tenants/{tenant}/agents/{name}`, which
      continues an incoming `traceparent`) ─▶ UnitOfWork span (`uow`)
      ─▶ service span (e.g. `service.apply_agent`)
      └─ the outbox row stores the W3C `traceparent` of the span current at `outbox.add`
         (and its trace id in the event's `trace_id`)
    relay `publish` span, parented on the stored traceparent; the NATS message carries the
      publish span's `traceparent` header
    consumer `process` span, parented on that header.

The controller's reconcile is a root span of its own (`reconcile`), with the same chain
below it. Context crosses process boundaries only in W3C Trace Context form
(https://www.w3.org/TR/trace-context/).

`configure_tracing` installs the SDK's TracerProvider once per process. Spans are exported
with OTLP over HTTP when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; otherwise they are made (so trace ids reach
logs, events and problem+json bodies) but not exported. The standard `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_SDK_DISABLED` apply.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

P = ParamSpec("P")
R = TypeVar("R")

TRACER_NAME = "agentos"
_propagator = TraceContextTextMapPropagator()


def tracer() -> trace.Tracer:
    """The Agent OS tracer (a proxy until `configure_tracing` installs the SDK)."""
    return trace.get_tracer(TRACER_NAME)


def configure_tracing(service_name: str) -> Any:
    """Install the SDK TracerProvider for this process (idempotent) and return it.

    Args:
        service_name: `service.name` of the spans unless `OTEL_SERVICE_NAME` says otherwise.

    Returns:
        The process's `opentelemetry.sdk.trace.TracerProvider` (an existing one is kept).
    """
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from controlplane.observability.run_tracing import RunSpanIds

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    # RunSpanIds: a run's spans are made by several processes after the fact, and find their
    # parents by derived ids (controlplane.observability.run_tracing).
    provider = TracerProvider(resource=Resource.create(attributes), id_generator=RunSpanIds())
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def current_trace_id() -> str | None:
    """The current span's trace id as 32 lowercase hex digits, or None outside a span."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, or None outside a span."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current span's `traceparent` (and `tracestate`) to `headers`; returns it."""
    _propagator.inject(headers)
    return headers


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """A context whose parent is the span named by `carrier['traceparent']` (a root context
    when there is none or it is malformed)."""
    return _propagator.extract(dict(carrier or {}))


def context_from_traceparent(traceparent: str | None) -> otel_context.Context:
    """A context parented on a stored `traceparent` string."""
    return extract({"traceparent": traceparent} if traceparent else None)


def traced(name: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Run the decorated coroutine function in a span called `name` (for the service
    layer's use cases: one span per use case, child of the current span)."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with tracer().start_as_current_span(name):
                return await fn(*args, **kwargs)

        return wrapper

    return decorate

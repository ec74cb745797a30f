"""HTTP metrics: a count and a duration per request (architecture/slos.md).

A plain ASGI middleware (not BaseHTTPMiddleware: it must see responses that are streamed
and requests that end in an unhandled error). The `route` label is the route *template* the
router matched (`/api/v1/tenants/{tenant}/agents/{name}`), never the raw path, so its values
stay bounded; a path no route serves is `unmatched`. A request with `?watch=true` is counted
with method `WATCH` (the Kubernetes apiserver's convention), so long-lived watches can be kept
out of latency objectives.

The request's span is FastAPI's own (its native OpenTelemetry support: a SERVER span named
`METHOD route` that continues an incoming W3C `traceparent`), made whenever the process has
installed a tracer provider (controlplane.observability.tracing.configure_tracing).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.observability import metrics

UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The path template of the route that served `scope`, or `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def _method(scope: Scope) -> str:
    query = scope.get("query_string", b"")
    if scope["method"] == "GET" and b"watch=true" in query.split(b"&"):
        return "WATCH"
    return str(scope["method"])


class RequestMetricsMiddleware:
    """Counts `agentos_api_requests_total{route,method,code}` and times
    `agentos_api_request_duration_seconds{route,method}`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = _method(scope)
        status = {"code": 500}  # what the client gets if the app raises before answering

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_template(scope)
            metrics.API_REQUESTS.labels(route, method, str(status["code"])).inc()
            metrics.API_REQUEST_DURATION.labels(route, method).observe(
                time.perf_counter() - started
            )

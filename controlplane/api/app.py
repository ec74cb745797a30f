"""The FastAPI application: health, readiness, metrics and the `/api/v1` routers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controlplane import __version__
from controlplane.api import agents, tenants
from controlplane.api.errors import agentos_error_handler, request_validation_handler
from controlplane.api.request_metrics import RequestMetricsMiddleware
from controlplane.domain.errors import AgentOSError
from controlplane.domain.lifecycle import IllegalTransition

# Every metric of the process is on /metrics from the start, even before its first use.
from controlplane.observability import metrics as _metrics  # noqa: F401
from controlplane.outbox import metrics as _outbox_metrics  # noqa: F401


def create_app(container: Any) -> FastAPI:
    """Build the HTTP application (DESIGN §4) on a bootstrap.Container."""
    app = FastAPI(title="Agent OS", version=__version__, openapi_url="/openapi.json")
    app.state.container = container
    app.add_exception_handler(AgentOSError, agentos_error_handler)
    app.add_exception_handler(IllegalTransition, agentos_error_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)

    @app.middleware("http")
    async def principal(request: Request, call_next: Any) -> Response:
        # Authentication arrives with the API issue; until then every caller is anonymous.
        request.state.principal = "anonymous"
        response: Response = await call_next(request)
        return response

    # Added last, so it is the outermost: it times and counts everything below, errors too.
    app.add_middleware(RequestMetricsMiddleware)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> dict[str, str]:
        """Readiness: the process can serve requests."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus text exposition of this process's metrics: API, controller, runtimes,
        agents, and the relay's when it runs in this process (`agentos serve`)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(agents.router)
    app.include_router(tenants.router)
    return app

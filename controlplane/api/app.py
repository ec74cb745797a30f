"""The FastAPI application: health, readiness, metrics and the `/api/v1` routers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from controlplane import __version__
from controlplane.api.a2a import routes as a2a
from controlplane.api.console import mount_console
from controlplane.api.context import ApiContext
from controlplane.api.errors import (
    FieldProblem,
    Problem,
    agentos_error_handler,
    http_error_handler,
    request_validation_handler,
    unexpected_error_handler,
)
from controlplane.api.request_metrics import RequestMetricsMiddleware
from controlplane.api.rest import (
    admin,
    agents,
    approvals,
    audit,
    logs,
    model_providers,
    replay,
    runs,
    suspension,
    tenants,
    whoami,
)
from controlplane.api.rest.params import reject_unknown_query_parameters
from controlplane.api.rest.run_models import RunEventOut
from controlplane.data.outbox.change_feed import OutboxFeed
from controlplane.domain.agents.lifecycle import IllegalTransition
from controlplane.domain.agents.model import Agent
from controlplane.domain.errors import AgentOSError
from controlplane.domain.providers.model import ProviderSpec
from controlplane.domain.runs.approvals import ApprovalDecision
from controlplane.domain.runs.model import RunCreate
from controlplane.messaging import metrics as _outbox_metrics  # noqa: F401

# Every metric of the process is on /metrics from the start, even before its first use.
from controlplane.observability import metrics as _metrics  # noqa: F401
from controlplane.service.replay import ReplayRequest

if TYPE_CHECKING:
    from controlplane.bootstrap import Container


def create_app(container: Container) -> FastAPI:
    """Build the HTTP application (architecture/api-compatibility.md) on a bootstrap.Container."""
    app = FastAPI(
        title="Agent OS",
        version=__version__,
        openapi_url="/openapi.json",
        dependencies=[Depends(reject_unknown_query_parameters)],
        # FastAPI's request span stays (it carries the trace id to the outbox, the logs and
        # problem+json bodies); its spans per dependency and endpoint, and its OpenTelemetry
        # metrics and logs (the Prometheus metrics are RequestMetricsMiddleware's) are off:
        # they cost a GET about as much as its query (architecture/scaling.md, API).
        telemetry={"operation_spans": False, "metrics": False, "logs": False},
    )
    app.state.container = container
    app.state.api = ApiContext.of(container)
    app.state.feed = OutboxFeed(container.engine)
    app.add_exception_handler(AgentOSError, agentos_error_handler)
    app.add_exception_handler(IllegalTransition, agentos_error_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)

    mount_console(app)  # /ui: the web console's static files (architecture/console.md)
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

    app.include_router(tenants.tenants_router)
    app.include_router(tenants.tenant_router)
    app.include_router(tenants.tokens_router)
    app.include_router(agents.router)
    app.include_router(suspension.router)
    app.include_router(logs.router)
    app.include_router(runs.router)
    app.include_router(model_providers.router)
    app.include_router(approvals.router)
    app.include_router(replay.router)
    app.include_router(audit.router)
    app.include_router(admin.router)
    app.include_router(a2a.router)
    app.include_router(whoami.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the schemas it cannot see: the Agent manifest and the run
    request (request bodies are validated by the domain, not by FastAPI), a run stream's
    event, and the problem+json shapes."""
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    template = "#/components/schemas/{model}"
    models = (Agent, RunCreate, ApprovalDecision, ProviderSpec, ReplayRequest)
    for model in (*models, RunEventOut, Problem, FieldProblem):
        generated = model.model_json_schema(ref_template=template, by_alias=True)
        for name, definition in generated.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components[model.__name__] = generated
    return schema

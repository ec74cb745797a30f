"""The FastAPI application: health, readiness, metrics and the `/api/v1` routers."""

from __future__ import annotations

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controlplane import __version__


def create_app() -> FastAPI:
    """Build the HTTP application (DESIGN §4): `/healthz`, `/readyz`, `/metrics`, `/api/v1`."""
    app = FastAPI(title="Agent OS", version=__version__, openapi_url="/openapi.json")

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
        """Prometheus text exposition of this process's metrics."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app

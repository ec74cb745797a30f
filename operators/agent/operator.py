"""`agentos operator`: leader election, then kopf and the status mirror while leading.

Every replica serves `/healthz` (liveness: the process runs), `/readyz` (ready: the
database answers and, when leading, kopf is watching) and `/metrics` on
AGENTOS_OPERATOR_HEALTH_PORT. Only the holder of the Lease runs the kopf handlers and the
status mirror; the others stand by. A leader that loses the Lease stops acting and the
process exits with status 1 (as controller-runtime does), to start again as a candidate.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from typing import Any

import kopf
import structlog
from aiohttp import web
from lightkube import AsyncClient, KubeConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from controlplane.bootstrap import Container, stop_on_signals
from controlplane.config import Settings
from controlplane.observability import metrics as obs
from operators.agent.handlers import build_registry
from operators.agent.leader import LeaderElector, LeaseSettings
from operators.agent.mirror import StatusMirror

log = structlog.get_logger("agentos.operator")


def identity() -> str:
    """This candidate's name in the Lease: the Pod's name (its hostname) and a nonce, so a
    restarted process is a new candidate."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


class Health:
    """The probe and metrics endpoints (see the module docstring)."""

    def __init__(self, container: Container, elector: LeaderElector) -> None:
        self._container = container
        self._elector = elector
        self.kopf_ready = asyncio.Event()

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "leader": self._elector.is_leader})

    async def readyz(self, _: web.Request) -> web.Response:
        problems = []
        try:
            async with self._container.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            problems.append(f"database: {type(exc).__name__}")
        if self._elector.is_leader and not self.kopf_ready.is_set():
            problems.append("kopf: not watching yet")
        body = {"ready": not problems, "leader": self._elector.is_leader, "problems": problems}
        return web.json_response(body, status=503 if problems else 200)

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, host: str, port: int) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner


async def run_operator(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT (returns 0) or until leadership is lost or kopf fails
    (returns 1)."""
    container = Container(settings)
    client = AsyncClient(KubeConfig.from_env(), field_manager="agentos-operator")
    elector = LeaderElector(
        client,
        LeaseSettings(
            namespace=settings.operator_namespace,
            name=settings.operator_lease,
            identity=identity(),
            lease_duration_s=settings.operator_lease_duration_s,
            renew_deadline_s=settings.operator_renew_deadline_s,
            retry_period_s=settings.operator_retry_period_s,
        ),
    )
    stop = stop_on_signals()
    health = Health(container, elector)
    runner = await health.start(settings.operator_health_host, settings.operator_health_port)
    obs.OPERATOR_LEADER.set(0)
    log.info("operator started; waiting for the lease", identity=elector.settings.identity)
    try:
        if not await elector.acquire(stop):
            return 0
        obs.OPERATOR_LEADER.set(1)
        namespaces = [n for n in settings.operator_namespaces.split(",") if n]
        lost = await _lead(container, client, elector, health, stop, namespaces)
        obs.OPERATOR_LEADER.set(0)
        return 1 if lost else 0
    finally:
        await elector.release()
        await runner.cleanup()
        await client.close()
        await container.close()


async def _lead(
    container: Container,
    client: AsyncClient,
    elector: LeaderElector,
    health: Health,
    stop: asyncio.Event,
    namespaces: list[str],
) -> bool:
    """Act as the leader until `stop` (False) or the Lease is lost or kopf fails (True).
    Everything that acts is stopped before this returns, so the Lease is released only once
    nothing acts."""
    acting = asyncio.Event()  # set: stop acting
    mirror = StatusMirror(container.engine, client, namespaces=namespaces)
    kopf_task = asyncio.create_task(
        kopf.operator(
            registry=build_registry(container, mirror),
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            stop_flag=acting,
            ready_flag=health.kopf_ready,
        )
    )
    mirror_task = asyncio.create_task(mirror.run(acting))
    hold_task = asyncio.create_task(elector.hold(stop))
    # kopf takes over SIGTERM/SIGINT while it runs (and then ends): its end is a stop too.
    await asyncio.wait({kopf_task, hold_task, mirror_task}, return_when=asyncio.FIRST_COMPLETED)
    lost = hold_task.done() and not hold_task.cancelled() and hold_task.result()
    crashed = kopf_task.done() and not stop.is_set() and not lost
    acting.set()
    stop.set()
    results: tuple[Any, ...] = await asyncio.gather(
        kopf_task, mirror_task, hold_task, return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.error("operator task failed", error=f"{type(result).__name__}: {result}")
            crashed = True
    return bool(lost or crashed)

"""Benchmark: an agent claiming a warm sandbox against one created for it, in the same run
(architecture/warm-pools.md). Not a test; nothing is asserted.

Real PostgreSQL, real NATS with the relay running and `require_published` on (as
`bench.lifecycle`), an in-process Controller on `ContainerdRuntime.from_env()` in a
containerd namespace of its own holding the python agent image built from this tree
(harness/containerd_namespace.py). Per runtime class (runc, and gVisor when configured) a warm
pool of `--pool-size` sandboxes for `python3 /agent/whoami_agent.py` (limits 500m / 128Mi);
samples alternate between an agent that matches the pool (warm) and one whose `args` differ
(cold: created as without pools); each is applied, waited Ready (readiness: the SDK's
heartbeat), then deleted; before each sample the pool is full (its refill not timed, and
not competing). One warm-up pair is not counted. One JSON line per figure, progress on stderr:

- `warm_pool_claim_to_ready`: from the claim (Scheduled → Starting; the agent's
  `status.startedAt`) to `status.readyAt`, both written by the controller. Goal p50 ≤ 50 ms
  (agent-sandbox's roadmap target; its claim path measured 500-800 ms).
- `cold_start_to_ready`: the same span for an agent whose sandbox is created (Scheduled →
  Starting → create, start, the SDK's start → Ready).
- `warm_pool_create_to_ready` and `cold_create_to_ready`: from `apply_agent`'s commit to the
  Ready row seen here (scheduling included), as `bench.lifecycle` measures it.

The sandboxes' gateway is not running (nothing listens on its port): the agents' polls are
refused and retried; readiness is the heartbeat the SDK touches from its start.

    set -a; . .services/env; set +a
    uv run --frozen python -m bench.warm_pool [--samples 20] [--pool-size 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.bootstrap import Container, schema_registry
from controlplane.config import Settings
from controlplane.controllers.agents.controller import Controller
from controlplane.data.engine import create_engine
from controlplane.data.tables import agents
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.warm_pools import WarmPool, sandbox_pool_key
from controlplane.domain.events.envelope import parse_rfc3339
from controlplane.domain.scheduling.admission import Node
from controlplane.messaging.relay import RelayConfig
from controlplane.messaging.streams import connect
from controlplane.observability.logging import configure_logging
from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from controlplane.service import agents as svc
from harness.containerd_namespace import private_namespace
from harness.postgres import create_database, drop_database
from harness.stats import percentile

TENANT = "bench"
COMMAND = ["python3", "/agent/whoami_agent.py"]
LIMITS = {"cpu": "500m", "memory": "128Mi"}
GOAL_MS = 50.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


class Plane:
    """The database, relay and controller of one run; waits woken by `on_reconciled`."""

    def __init__(self, engine: AsyncEngine, controller: Controller) -> None:
        self.engine = engine
        self.controller = controller
        self.changed = asyncio.Event()
        controller.on_reconciled = lambda _key: self.changed.set()

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine, schema_registry(), principal="bench")

    async def apply(self, manifest: dict[str, Any]) -> str:
        async with self.uow() as uow:
            result = await svc.apply_agent(uow, TENANT, manifest)
        self.controller.notify(result.agent.id)
        return result.agent.id

    async def delete(self, name: str) -> str:
        async with self.uow() as uow:
            record = await svc.delete_agent(uow, TENANT, name)
        self.controller.notify(record.id)
        return record.id

    async def row(self, agent_id: str) -> tuple[str, dict[str, Any]] | None:
        query = select(agents.c.phase, agents.c.status).where(agents.c.id == agent_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (row[0], row[1] or {})

    async def until(self, check: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
        """time.perf_counter() of the first look (after a reconcile, or every 0.25 s) at
        which `check()` holds. Raises TimeoutError."""
        deadline = time.perf_counter() + timeout_s
        while True:
            self.changed.clear()
            seen_at = time.perf_counter()
            if await check():
                return seen_at
            if seen_at > deadline:
                raise TimeoutError(f"not within {timeout_s:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.25)


@contextlib.asynccontextmanager
async def control_plane(runtime: ContainerdRuntime, pools: list[WarmPool]) -> AsyncIterator[Plane]:
    admin_dsn = os.environ["AGENTOS_PG_ADMIN_DSN"]
    name, url = await create_database(admin_dsn, os.environ["AGENTOS_DATABASE_URL"])
    engine = create_engine(url)
    stop = asyncio.Event()
    nc = await connect(os.environ["AGENTOS_NATS_URL"], name="bench-warm-pool")
    assert runtime.network is not None, "the benchmark needs sandbox networking (cni)"
    settings = runtime.network.settings
    try:
        container = Container(
            Settings(database_url=url),
            engine=engine,
            runtimes=dict.fromkeys(runtime.runtimes, runtime),
        )
        config = dataclasses.replace(
            container.controller_config(),
            require_published=True,
            nodes=[Node("bench", 64_000, 256 * 2**30, 100_000)],
            gateway_url=f"http://{settings.host_address}:{settings.ports[0]}",
            egress_proxy_url=None,
            warm_pools=pools,
        )
        controller = container.build_controller(config)
        tasks = [asyncio.create_task(controller.run(stop))]
        tasks.append(asyncio.create_task(container.build_relay(nc, RelayConfig()).run(stop)))
        try:
            yield Plane(engine, controller)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await nc.close()
        await engine.dispose()
        await drop_database(admin_dsn, name)


def manifest(name: str, pool: WarmPool, cold: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": pool.image,
        "runtime": {"class": pool.runtimeClass},
        "command": COMMAND,
        "args": ["--cold"] if cold else [],
        "config": {"who": name},
        "resources": {"limits": LIMITS},
        "readiness": {"heartbeat": {}, "periodSeconds": 1},
    }
    return {"apiVersion": "agentos.io/v1alpha1", "kind": "Agent", "metadata": {"name": name}} | {
        "spec": spec
    }


async def sample(plane: Plane, pool: WarmPool, name: str, cold: bool) -> dict[str, Any]:
    """One agent applied, Ready, deleted: its spans in seconds and whether it was warm."""
    began = time.perf_counter()
    agent_id = await plane.apply(manifest(name, pool, cold))

    async def ready() -> bool:
        row = await plane.row(agent_id)
        if row is not None and row[0] == "Failed":
            raise RuntimeError(f"{name} Failed: {row[1].get('reason')}: {row[1].get('message')}")
        return row is not None and row[0] == "Ready"

    seen = await plane.until(ready, 120)
    row = await plane.row(agent_id)
    assert row is not None
    status = row[1]
    start_to_ready = parse_rfc3339(status["readyAt"]) - parse_rfc3339(status["startedAt"])
    gone_id = await plane.delete(name)

    async def gone() -> bool:
        return await plane.row(gone_id) is None

    await plane.until(gone, 60)
    return {
        "create_to_ready_s": seen - began,
        "start_to_ready_s": start_to_ready.total_seconds(),
        "warm": sandbox_pool_key(status.get("sandboxID") or "") is not None,
    }


async def full(plane: Plane, pool: WarmPool) -> None:
    async def filled() -> bool:
        return len(plane.controller.pools.ready(pool)) >= pool.size

    await plane.until(filled, 120)


def figure(name: str, runtime_class: str, spans_s: list[float], **extra: Any) -> dict[str, Any]:
    values = [s * 1000 for s in spans_s]
    p50 = percentile(values, 50) if values else None
    return {
        "figure": name,
        "runtime_class": runtime_class,
        "samples": len(values),
        "p50_ms": round(p50, 1) if p50 is not None else None,
        "p95_ms": round(percentile(values, 95), 1) if values else None,
        **extra,
    }


async def figures(plane: Plane, pool: WarmPool, samples: int) -> list[dict[str, Any]]:
    c = pool.runtimeClass
    warm: list[dict[str, Any]] = []
    cold: list[dict[str, Any]] = []
    for i in range(samples + 1):  # the first pair is a warm-up
        await full(plane, pool)  # no refill competes with either sample
        k = await sample(plane, pool, f"cold-{c}-{i}", cold=True)
        await full(plane, pool)
        w = await sample(plane, pool, f"warm-{c}-{i}", cold=False)
        log(f"{c} {i}: warm {w['start_to_ready_s'] * 1000:.0f} ms, cold "
            f"{k['start_to_ready_s'] * 1000:.0f} ms (claim/start → Ready)")  # fmt: skip
        if i:
            warm.append(w)
            cold.append(k)
    claimed = [s for s in warm if s["warm"]]
    claim = figure("warm_pool_claim_to_ready", c, [s["start_to_ready_s"] for s in claimed])
    claim |= {"goal_p50_ms": GOAL_MS, "met": (claim["p50_ms"] or 1e9) <= GOAL_MS}
    claim |= {"misses": len(warm) - len(claimed), "pool_size": pool.size}
    return [
        claim,
        figure("cold_start_to_ready", c, [s["start_to_ready_s"] for s in cold]),
        figure("warm_pool_create_to_ready", c, [s["create_to_ready_s"] for s in claimed]),
        figure("cold_create_to_ready", c, [s["create_to_ready_s"] for s in cold]),
    ]


async def bench(args: argparse.Namespace) -> None:
    address = os.environ["CONTAINERD_ADDRESS"]
    snapshotter = os.environ.get("CONTAINERD_SNAPSHOTTER") or "overlayfs"
    tmp = Path(tempfile.mkdtemp(prefix="agentos-bench-warm-"))
    try:
        log("building the python agent image from this tree")
        async with private_namespace(address, snapshotter, tmp) as (namespace, ref):
            env = {**os.environ, "CONTAINERD_NAMESPACE": namespace}
            runtime = ContainerdRuntime.from_env(env | {"AGENTOS_SANDBOX_DIR": str(tmp / "sb")})
            classes = [c for c in args.classes.split(",") if c in runtime.runtimes]
            pools = [
                WarmPool.model_validate(
                    {"runtimeClass": c, "image": ref, "command": COMMAND, "size": args.pool_size}
                    | {"resources": LIMITS}
                )
                for c in classes
            ]
            try:
                async with control_plane(runtime, pools) as plane:
                    for pool in pools:
                        for result in await figures(plane, pool, args.samples):
                            emit(result)
            finally:
                for sandbox_id in await runtime.list_sandboxes():
                    await runtime.remove(sandbox_id)
                await runtime.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=20, help="samples per side and runtime class")
    p.add_argument("--pool-size", type=int, default=3, help="warm sandboxes per pool")
    p.add_argument("--classes", default="runc,gvisor", help="runtime classes (those configured)")
    args = p.parse_args(argv)
    configure_logging("warning", fmt="console")
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()

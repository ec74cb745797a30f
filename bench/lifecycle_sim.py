"""Benchmark: N agents through the whole state machine on the simulated runtime.

Not a test. Real PostgreSQL (and, with --relay, real NATS: Ready then also waits for every
earlier event of the agent to be Published, as in production). Prints one JSON line:
time until all Ready, agents per second, controller CPU seconds and peak RSS.

    python -m bench.lifecycle_sim --agents 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time

from sqlalchemy import func, select

from bench.database import create_database, drop_database
from controlplane.bootstrap import schema_registry
from controlplane.controllers.agents.controller import Controller, ControllerConfig
from controlplane.data.engine import create_engine
from controlplane.data.tables import agents
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.scheduling.admission import Node
from controlplane.messaging.relay import Relay, RelayConfig
from controlplane.messaging.streams import connect
from controlplane.runtimes.simulated import SimulatedRuntime
from controlplane.service import agents as svc

TENANTS = 10


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def main(args: argparse.Namespace) -> dict:
    admin_dsn = os.environ["AGENTOS_PG_ADMIN_DSN"]
    name, url = await create_database(admin_dsn, os.environ["AGENTOS_DATABASE_URL"])
    engine = create_engine(url, pool_size=20)
    sim = SimulatedRuntime(start_latency_s=args.start_latency_s)
    controller = Controller(
        engine,
        schema_registry(),
        {"runc": sim, "gvisor": sim, "process": sim},
        ControllerConfig(
            workers=args.workers,
            change_poll_s=0.5,
            resync_s=600,
            require_published=args.relay,
            nodes=[Node(f"node-{i}", 64_000, 256 * 2**30) for i in range(4)],
        ),
    )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(controller.run(stop))]
    nc = None
    if args.relay:
        nc = await connect(os.environ["AGENTOS_NATS_URL"], name="bench")
        relay = Relay(engine, url, nc, RelayConfig(batch_size=512, poll_interval_s=0.2))
        tasks.append(asyncio.create_task(relay.run(stop)))
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(4)

    def manifest(i: int) -> dict:
        return {
            "apiVersion": "agentos.io/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": f"agent-{i}"},
            "spec": {
                "image": "sim",
                "runtime": {"class": "runc"},
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            },
        }

    async def create(tenant: int, first: int) -> None:
        # A bulk create per tenant and chunk (one transaction each, all or nothing).
        indexes = range(first, min(first + args.create_batch, args.agents), TENANTS)
        async with sem, UnitOfWork(engine, schema_registry()) as uow:
            records = await svc.create_agents(
                uow, f"tenant-{tenant}", [manifest(i) for i in indexes]
            )
        for record in records:
            controller.notify(record.id)

    await asyncio.gather(
        *(
            create(tenant, first + tenant)
            for first in range(0, args.agents, args.create_batch)
            for tenant in range(TENANTS)
        )
    )
    created_s = time.perf_counter() - t0
    log(f"created {args.agents} in {created_s:.1f}s")
    ready = 0
    while ready < args.agents and time.perf_counter() - t0 < args.timeout_s:
        await asyncio.sleep(0.5)
        async with engine.connect() as conn:
            ready = (
                await conn.execute(
                    select(func.count()).select_from(agents).where(agents.c.phase == "Ready")
                )
            ).scalar_one()
        log(f"{time.perf_counter() - t0:6.1f}s ready={ready}")
    total_s = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    if nc:
        await nc.close()
    await engine.dispose()
    await drop_database(admin_dsn, name)
    return {
        "bench": "lifecycle_simulated",
        "agents": args.agents,
        "all_ready": ready == args.agents,
        "ready": ready,
        "time_to_all_ready_s": round(total_s, 2),
        "create_s": round(created_s, 2),
        "agents_per_s": round(ready / total_s, 1),
        "controller_cpu_s": round(cpu_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "relay": args.relay,
        "workers": args.workers,
        "create_batch_per_tenant": args.create_batch // TENANTS,
        "goal_s": 60,
    }


def parser() -> argparse.ArgumentParser:
    """The command line; its defaults are the benchmark of record (10,000 agents)."""
    p = argparse.ArgumentParser()
    p.add_argument("--agents", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=64)
    p.add_argument(
        "--create-batch", type=int, default=2000, help="agents per bulk create, over all tenants"
    )
    p.add_argument("--start-latency-s", type=float, default=0.0)
    p.add_argument("--timeout-s", type=float, default=300)
    p.add_argument("--relay", action=argparse.BooleanOptionalAction, default=True)
    return p


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parser().parse_args()))))

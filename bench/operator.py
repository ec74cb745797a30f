"""Benchmark: 1,000 Agents through Kubernetes (the operator) against the same 1,000 through
the REST API, on the same control plane and the same KWOK nodes, in the same run.

Not a test; nothing is asserted. One JSON line on stdout, progress on stderr.

Setup (real kube-apiserver, etcd and KWOK from `make services`; real PostgreSQL):
- Agent OS installed as shipped (CRD, RBAC, RuntimeClasses); `--nodes` KWOK nodes
  (16 cpu, 64Gi, 110 pods each: everything fits, so the figures are about speed);
- one database per path; each path runs the controller with the Kubernetes runtime under
  ServiceAccount agentos-controller, so both paths end in bound Pods that KWOK runs.

1. `kubernetes`: `agentos operator` (ServiceAccount agentos-operator). The Agents are
   created at once through the apiserver (`--concurrency` requests in flight); the clock
   starts before the first create. An Agent counts as Ready when a watch on Agents sees
   `.status.phase == Ready` (what `kubectl get agents` shows). create → Ready per Agent:
   from its create call returning to that watch event (one clock: this process).
2. `rest`: `agentos serve` (API and controller). The same Agents are POSTed to
   `/api/v1/tenants/{tenant}/agents` with `--concurrency` in flight; Ready is read from the
   control plane's rows (status.readyAt - created_at, the control plane's clock, which is
   this host's) once every agent is Ready.

`ratio_all_ready` = kubernetes all-Ready time / rest all-Ready time. Operator memory: peak
RSS (VmHWM) of the operator process. Everything created is deleted at the end (Agents, their
Pods, the nodes, the databases).

    set -a; . .services/env; set +a
    uv run --frozen python -m bench.operator [--agents 1000] [--nodes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

import httpx
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from sqlalchemy import select

from controlplane.data.engine import create_engine
from controlplane.data.tables import agents as agents_table
from harness import kube as kc
from harness.postgres import create_database, drop_database
from harness.stats import percentile
from harness.waiting import wait_until

Agent = create_namespaced_resource("agentos.io", "v1alpha1", "Agent", "agents")


def progress(message: str) -> None:
    print(f"[bench.operator] {message}", file=sys.stderr, flush=True)


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "image": "registry.example/agent:1",
            "runtime": {"class": "runc"},
            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}},
        },
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def through_kubernetes(
    admin: AsyncClient, tenant: str, count: int, concurrency: int
) -> dict[str, Any]:
    created_at: dict[str, float] = {}
    ready_at: dict[str, float] = {}
    done = asyncio.Event()

    async def watch() -> None:
        async for _, obj in admin.watch(Agent, namespace=tenant):
            name = obj.metadata.name if obj.metadata else ""
            status = cast(dict[str, Any], obj.get("status") or {})
            if status.get("phase") == "Ready" and name not in ready_at:
                ready_at[name] = time.perf_counter()
                if len(ready_at) == count:
                    done.set()
                    return

    watcher = asyncio.create_task(watch())
    gate = asyncio.Semaphore(concurrency)

    async def create(name: str) -> None:
        async with gate:
            body = manifest(name)
            body["metadata"]["namespace"] = tenant
            await admin.create(Agent.from_dict(body))
            created_at[name] = time.perf_counter()

    started = time.perf_counter()
    await asyncio.gather(*(create(f"k{i:04d}") for i in range(count)))
    created = time.perf_counter() - started
    await asyncio.wait_for(done.wait(), 600)
    all_ready = max(ready_at.values()) - started
    watcher.cancel()
    latencies = [ready_at[n] - created_at[n] for n in created_at]
    return {
        "all_ready_s": round(all_ready, 2),
        "creates_s": round(created, 2),
        "create_to_ready_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "create_to_ready_p95_ms": round(percentile(latencies, 95) * 1000, 1),
    }


async def through_rest(
    api_url: str, token: str, database_url: str, tenant: str, count: int, concurrency: int
) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    engine = create_engine(database_url)
    try:
        async with httpx.AsyncClient(
            base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as http:

            async def create(name: str) -> None:
                async with gate:
                    got = await http.post(f"/api/v1/tenants/{tenant}/agents", json=manifest(name))
                    got.raise_for_status()

            started = time.perf_counter()
            started_wall = time.time()
            await asyncio.gather(*(create(f"r{i:04d}") for i in range(count)))
            created = time.perf_counter() - started
        while True:
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(select(agents_table.c.status, agents_table.c.created_at))
                ).all()
            ready = [r for r in rows if r.status.get("phase") == "Ready"]
            if len(ready) == count:
                break
            await asyncio.sleep(0.05)
        from controlplane.domain.events.envelope import as_utc, parse_rfc3339

        latencies = [
            (parse_rfc3339(r.status["readyAt"]) - as_utc(r.created_at)).total_seconds()
            for r in ready
        ]
        last_ready = max(parse_rfc3339(r.status["readyAt"]).timestamp() for r in ready)
        return {
            "all_ready_s": round(last_ready - started_wall, 2),
            "creates_s": round(created, 2),
            "create_to_ready_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "create_to_ready_p95_ms": round(percentile(latencies, 95) * 1000, 1),
        }
    finally:
        await engine.dispose()


async def delete_all(admin: AsyncClient, tenant: str) -> None:
    """Delete the Agents (the operator and controller remove Pods and rows) and wait until
    the Pods are gone, so KWOK is not left running them."""
    kc.kubectl("delete", "agents", "--all", "-n", tenant, "--wait=false", check=False)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        pods = kc.kubectl_json("get", "pods", "-n", tenant)["items"]
        agents = kc.kubectl_json("get", "agents", "-n", tenant)["items"]
        if not pods and not agents:
            return
        await asyncio.sleep(1)
    progress(f"cleanup of {tenant} did not finish in 300 s")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    admin_dsn = os.environ["AGENTOS_PG_ADMIN_DSN"]
    db_url = os.environ["AGENTOS_DATABASE_URL"]
    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    kc.install()
    accounts = {
        sa: kc.service_account_kubeconfig(sa, work / f"{sa}.kubeconfig")
        for sa in ("agentos-operator", "agentos-controller")
    }
    prefix = f"bench{uuid.uuid4().hex[:5]}"
    progress(f"{args.nodes} KWOK nodes")
    kc.fake_nodes(prefix, [kc.NodeShape("16", "64Gi", 110)] * args.nodes)
    admin = AsyncClient(KubeConfig.from_file(kc.admin_kubeconfig()))
    made: list[str] = []
    processes: list[kc.AgentOS] = []
    result: dict[str, Any] = {
        "benchmark": "operator",
        "agents": args.agents,
        "nodes": args.nodes,
        "kube_apiserver": os.environ.get("AGENTOS_KUBE_VERSION"),
        "kwok": os.environ.get("AGENTOS_KWOK_VERSION"),
        "cpus": os.cpu_count(),
    }
    try:
        # 1. Kubernetes: the operator.
        name, url = await create_database(admin_dsn, db_url, "agentos_bench_op")
        made.append(name)
        tenant = kc.tenant_namespace("bench-k")
        kc.release_lease()
        instance = kc.new_instance()
        controller = kc.controller_process(
            url, accounts["agentos-controller"], work / "c1.log", instance
        )
        operator = kc.operator_process(url, accounts["agentos-operator"], work / "op.log", [tenant])
        processes += [controller.start(), operator.start()]
        kc.wait_started(controller)
        wait_until(kc.lease_holder, 60, "an operator holding the Lease")
        health = operator.env["AGENTOS_OPERATOR_HEALTH_PORT"]
        readyz = f"http://127.0.0.1:{health}/readyz"
        wait_until(lambda: answers(readyz), 60, "the operator ready (kopf watching)")
        progress(f"{args.agents} Agents through the apiserver")
        kube = await through_kubernetes(admin, tenant, args.agents, args.concurrency)
        assert operator.proc is not None
        kube["operator_peak_rss_mb"] = round(peak_rss_mb(operator.proc.pid), 1)
        assert controller.proc is not None
        kube["controller_peak_rss_mb"] = round(peak_rss_mb(controller.proc.pid), 1)
        progress(f"kubernetes: {kube}")
        await delete_all(admin, tenant)
        operator.stop()
        controller.stop()

        # 2. REST: the API and controller in one `agentos serve`.
        name, url = await create_database(admin_dsn, db_url, "agentos_bench_rest")
        made.append(name)
        tenant = kc.tenant_namespace("bench-r")
        token = issue_token(url)
        env = kc.base_env(url)
        port = kc.free_port()
        env.update(
            AGENTOS_INSTANCE=kc.new_instance(),
            KUBECONFIG=str(accounts["agentos-controller"]),
            AGENTOS_RUNTIME="kubernetes",
            AGENTOS_COMPONENTS="api,controller",
            AGENTOS_HOST="127.0.0.1",
            AGENTOS_PORT=str(port),
            AGENTOS_GRPC_PORT="0",
            AGENTOS_CONTROLLER_WORKERS="16",
            AGENTOS_RATE_LIMIT_PER_S="0",
        )
        serve = kc.AgentOS(["serve"], env, work / "serve.log").start()
        processes.append(serve)
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), 60, "the API ready")
        progress(f"{args.agents} Agents through REST")
        rest = await through_rest(
            f"http://127.0.0.1:{port}", token, url, tenant, args.agents, args.concurrency
        )
        progress(f"rest: {rest}")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
        ) as http:
            for i in range(args.agents):
                await http.delete(f"/api/v1/tenants/{tenant}/agents/r{i:04d}")
        await delete_all(admin, tenant)
        serve.stop()

        result.update(
            kubernetes=kube,
            rest=rest,
            ratio_all_ready=round(kube["all_ready_s"] / rest["all_ready_s"], 2),
            goal_all_ready_s=60,
        )
        return result
    finally:
        for proc in processes:
            proc.stop()
        kc.delete_fake_nodes(prefix)
        await admin.close()
        for name in made:
            await drop_database(admin_dsn, name)
        progress(f"logs in {work}")


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def issue_token(database_url: str) -> str:
    env = kc.base_env(database_url)
    made = subprocess.run(
        [sys.executable, "-m", "controlplane.cli.main", "token", "create", "--principal",
         "bench-operator", "--platform-admin"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return made.stdout.strip()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=32)
    return p


if __name__ == "__main__":
    try:
        print(json.dumps(asyncio.run(main(parser().parse_args()))), flush=True)
    except ApiError as exc:
        print(f"bench.operator: {exc}", file=sys.stderr)
        sys.exit(1)

"""Benchmark: the agent lifecycle on real sandboxes (containerd: runc and gVisor).

Not a test; nothing is asserted. Real PostgreSQL, real NATS with the relay running and
`require_published` on (Ready waits until every earlier event of the agent is Published, as in
production), an in-process Controller on `ContainerdRuntime.from_env()`. One JSON line per
figure on stdout, progress on stderr:

1. `lifecycle_start` (per runtime class, runc and gVisor): Create → Ready latency of one agent
   at a time, from the moment `apply_agent` has committed until the controller has committed
   Ready (seen through `Controller.on_reconciled`, confirmed by reading the row), against the
   same container started directly with `ctr run -d` in the same run, with the same sandbox
   networking done by hand: a network namespace (`unshare --net=FILE`), the CNI `bridge`
   (host-local IPAM, the same lease folder) and `loopback` plugins called directly, and
   `ctr run --with-ns network:FILE`; timed from creating the namespace until HTTP GET
   <address>:<port>/healthz answers from here (for runc and gVisor alike, as the
   ContainerdRuntime probes; gVisor runs its own network stack through the same runsc
   wrapper). The baseline has no firewall element and no port isolation: those are ours.
   Without sandbox networking (AGENTOS_SANDBOX_NETWORK=none) the baseline is the old one:
   runc `--net-host` probed on 127.0.0.1, gVisor probed by `wget` inside the sandbox. Both
   sides run the same image, env, CPU and memory limits and file:// output log; samples
   alternate between the two (background load hits both alike); one warm-up pair per class
   is not counted. Each agent/container is deleted between samples (not timed).
   `ratio_p50` = AgentOS p50 / ctr p50; goal 1.3.
2. `lifecycle_scale_runc`: `--scale-agents` runc agents (distinct host ports) applied at once;
   time until all are Ready, memory per agent (see `memory_source`), then all deleted and the
   time until every agent row and container is gone.
3. `lifecycle_simulated` (only with `--with-simulated`, slow): `bench.lifecycle_sim.main` with
   its defaults (10,000 agents on the simulated runtime).

Isolation: a database of its own (created from AGENTOS_PG_ADMIN_DSN, dropped at the end), a
sandbox state dir in a temporary folder, and, by default, a containerd namespace of its own
(`agentos-bench-<random>`, the example image imported into it, removed at the end): the
controller removes every `agentos.io/managed` sandbox of its namespace that its database does
not know, so sharing the test namespace with a concurrently running test suite would make
the two remove each other's sandboxes. Everything the run created is removed through the
runtime on the way out, also after a failure or Ctrl-C.

    set -a; . .services/env; set +a
    uv run --frozen python -m bench.lifecycle [--samples 10] [--scale-agents 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import resource
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.raw_cni import RawCni
from controlplane.bootstrap import Container, schema_registry
from controlplane.config import Settings
from controlplane.controllers.agents.controller import Controller, ControllerConfig
from controlplane.data.engine import create_engine
from controlplane.data.tables import agents
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.scheduling.admission import Node
from controlplane.messaging.relay import RelayConfig
from controlplane.messaging.streams import connect
from controlplane.observability.logging import configure_logging
from controlplane.runtimes.base import ProbeSpec, SandboxSpec, SandboxStatus
from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from controlplane.service import agents as svc
from harness.postgres import create_database, drop_database
from harness.stats import percentile

TENANT = "bench"
CPU_LIMIT = "250m"  # both sides: AgentOS limits and `ctr run --cpus 0.25`
MEMORY_LIMIT_BYTES = 64 * 2**20  # both sides: AgentOS limits and `ctr run --memory-limit`
GVISOR_PORT = 8080  # a gVisor sandbox has a network namespace of its own
POLL_S = 0.01  # the ctr side's readiness polling interval
MIB = 2**20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on 127.0.0.1 right now (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# -- ctr ---------------------------------------------------------------------------------------


class Ctr:
    """`ctr` against the benchmark's containerd address and namespace."""

    def __init__(self, address: str, namespace: str) -> None:
        binary = shutil.which("ctr")
        if binary is None:
            raise SystemExit("ctr is not on PATH (make services installs containerd)")
        self.argv = [binary, "--address", address, "-n", namespace]

    async def run(self, *args: str, timeout_s: float = 60) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return -1, f"ctr {' '.join(args)}: timed out after {timeout_s}s"
        return proc.returncode or 0, out.decode(errors="replace")

    async def check(self, *args: str, timeout_s: float = 120) -> str:
        rc, out = await self.run(*args, timeout_s=timeout_s)
        if rc != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed ({rc}): {out.strip()}")
        return out


# -- a runtime that records when the controller's calls return ----------------------------------


class TimedRuntime:
    """Forwards to a ContainerdRuntime and records (time.perf_counter) when create is called,
    when start returns, and when a probe first succeeds, per sandbox id; and how many calls
    of each method the controller made (`calls`), and their summed duration (`busy_s`)."""

    def __init__(self, inner: ContainerdRuntime) -> None:
        self.inner = inner
        self.create_called: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.probes: dict[str, int] = {}
        self.first_ok: dict[str, float] = {}
        self.calls: Counter[str] = Counter()
        self.busy_s: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _call(self, method: str, *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return await getattr(self.inner, method)(*args)
        finally:
            self.calls[method] += 1
            self.busy_s[method] += time.perf_counter() - t

    async def create(self, spec: SandboxSpec) -> SandboxStatus:
        self.create_called.setdefault(spec.sandbox_id, time.perf_counter())
        return await self._call("create", spec)  # type: ignore[no-any-return]

    async def start(self, sandbox_id: str) -> SandboxStatus:
        status = await self._call("start", sandbox_id)
        self.started.setdefault(sandbox_id, time.perf_counter())
        return status  # type: ignore[no-any-return]

    async def status(self, sandbox_id: str) -> SandboxStatus:
        return await self._call("status", sandbox_id)  # type: ignore[no-any-return]

    async def remove(self, sandbox_id: str) -> None:
        await self._call("remove", sandbox_id)

    async def list_sandboxes(self) -> dict[str, str]:
        return await self._call("list_sandboxes")  # type: ignore[no-any-return]

    async def probe(self, sandbox_id: str, probe: ProbeSpec) -> bool:
        ok = bool(await self._call("probe", sandbox_id, probe))
        if sandbox_id not in self.first_ok:
            self.probes[sandbox_id] = self.probes.get(sandbox_id, 0) + 1
            if ok:
                self.first_ok[sandbox_id] = time.perf_counter()
        return ok

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        return Counter(self.calls), Counter(self.busy_s)


# -- the control plane -------------------------------------------------------------------------


class Plane:
    """Database, relay and controller of one run; waits driven by `on_reconciled`."""

    def __init__(self, engine: AsyncEngine, controller: Controller, runtime: TimedRuntime) -> None:
        self.engine = engine
        self.controller = controller
        self.runtime = runtime
        self.changed = asyncio.Event()
        controller.on_reconciled = lambda _key: self.changed.set()

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine, schema_registry(), principal="bench")

    async def apply(self, manifest: dict[str, Any]) -> str:
        async with self.uow() as uow:
            result = await svc.apply_agent(uow, TENANT, manifest)
        return result.agent.id

    async def delete(self, name: str) -> str:
        async with self.uow() as uow:
            record = await svc.delete_agent(uow, TENANT, name)
        self.controller.notify(record.id)
        return record.id

    async def row(self, agent_id: str) -> tuple[str, dict[str, Any]] | None:
        """(phase, status) of the agent, None once its row is gone."""
        query = select(agents.c.phase, agents.c.status).where(agents.c.id == agent_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (row[0], row[1] or {})

    async def until(self, check: Callable[[], Any], timeout_s: float, what: str) -> float:
        """Wait until `await check()` is true, looking after every reconcile (and at least
        every 0.25 s); returns time.perf_counter() of the look that saw it."""
        deadline = time.perf_counter() + timeout_s
        while True:
            self.changed.clear()
            seen_at = time.perf_counter()
            if await check():
                return seen_at
            if seen_at > deadline:
                raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.25)

    async def wait_ready(self, agent_id: str, timeout_s: float) -> float:
        async def ready() -> bool:
            row = await self.row(agent_id)
            if row is None:
                raise RuntimeError(f"agent {agent_id} vanished")
            if row[0] == "Failed":
                status = row[1]
                raise RuntimeError(f"agent {agent_id} Failed: {status.get('reason')}: {status}")
            return row[0] == "Ready"

        return await self.until(ready, timeout_s, f"agent {agent_id} Ready")

    async def wait_gone(self, agent_id: str, timeout_s: float) -> float:
        async def gone() -> bool:
            return await self.row(agent_id) is None

        return await self.until(gone, timeout_s, f"agent {agent_id} deleted")


@contextlib.asynccontextmanager
async def control_plane(
    args: argparse.Namespace, runtime: TimedRuntime, node: Node
) -> AsyncIterator[Plane]:
    admin_dsn = os.environ["AGENTOS_PG_ADMIN_DSN"]
    name, url = await create_database(admin_dsn, os.environ["AGENTOS_DATABASE_URL"])
    engine: AsyncEngine | None = None
    nc = None
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        engine = create_engine(url)
        # As `agentos serve` configures them (bootstrap.py): defaults but the node.
        container = Container(
            Settings(database_url=url),
            engine=engine,
            runtimes={"runc": runtime, "gvisor": runtime},  # type: ignore[dict-item]
        )
        controller = container.build_controller(
            dataclasses.replace(
                container.controller_config(),
                workers=args.workers,
                require_published=True,
                nodes=[node],
            )
        )
        nc = await connect(os.environ["AGENTOS_NATS_URL"], name="bench-lifecycle")
        tasks.append(asyncio.create_task(controller.run(stop)))
        tasks.append(asyncio.create_task(container.build_relay(nc, RelayConfig()).run(stop)))
        yield Plane(engine, controller, runtime)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if nc is not None:
            await nc.close()
        if engine is not None:
            await engine.dispose()
        await drop_database(admin_dsn, name)


def agent_manifest(name: str, runtime_class: str, port: int, period_s: float) -> dict[str, Any]:
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "image": os.environ["AGENTOS_EXAMPLE_IMAGE"],
            "runtime": {"class": runtime_class},
            "env": [{"name": "AGENT_PORT", "value": str(port)}],
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": CPU_LIMIT, "memory": f"{MEMORY_LIMIT_BYTES // MIB}Mi"},
            },
            "readiness": {
                "httpGet": {"port": port, "path": "/healthz"},
                "periodSeconds": period_s,
            },
        },
    }


# -- figure 1: one agent at a time -------------------------------------------------------------


class StartBench:
    def __init__(self, args: argparse.Namespace, plane: Plane, ctr: Ctr, tmp: Path) -> None:
        self.args = args
        self.plane = plane
        self.ctr = ctr
        self.tmp = tmp
        self.ctr_ids: list[str] = []  # every container the ctr side started (cleanup)
        self.http = httpx.AsyncClient(trust_env=False)
        net = plane.runtime.inner.network
        self.cni = RawCni(net.settings, tmp / "raw-netns") if net is not None else None

    async def agentos(self, runtime_class: str, i: int) -> dict[str, float]:
        port = free_ports(1)[0]
        name = f"start-{runtime_class}-{i}"
        manifest = agent_manifest(name, runtime_class, port, self.args.probe_period_s)
        agent_id = await self.plane.apply(manifest)
        t0 = time.perf_counter()  # the create has committed
        self.plane.controller.notify(agent_id)  # what the API does after a commit
        ready = await self.plane.wait_ready(agent_id, self.args.start_timeout_s)
        async with self.plane.uow() as uow:
            record = await uow.agents.by_id(agent_id)
        assert record is not None
        sid = record.status.sandboxID or ""
        rt = self.plane.runtime
        created, started = rt.create_called.get(sid, t0), rt.started.get(sid, t0)
        first_ok = rt.first_ok.get(sid, ready)
        sample = {
            "total": ready - t0,
            "until_create_call": created - t0,
            "create_and_start": started - created,
            "start_to_probe_ok": first_ok - started,
            "probe_ok_to_ready": ready - first_ok,
            "probes": float(rt.probes.get(sid, 0)),
        }
        gone_id = await self.plane.delete(name)
        await self.plane.wait_gone(gone_id, self.args.start_timeout_s)
        return sample

    async def _ready_http(self, host: str, port: int) -> bool:
        try:
            resp = await self.http.get(f"http://{host}:{port}/healthz", timeout=1.0)
        except httpx.HTTPError:
            return False
        return 200 <= resp.status_code < 400

    async def _ready_gvisor(self, cid: str, attempt: int) -> bool:
        # As ContainerdRuntime.probe for a sandbox without host networking (no `wget -T`).
        url = f"http://127.0.0.1:{GVISOR_PORT}/healthz"
        wget = ["wget", "-q", "-O", "/dev/null", url]
        rc, _ = await self.ctr.run("tasks", "exec", "--exec-id", f"probe-{attempt}", cid, *wget)
        return rc == 0

    async def ctr_run(self, runtime_class: str, i: int) -> dict[str, float]:
        cni = self.cni
        port = GVISOR_PORT if runtime_class == "gvisor" and cni is None else free_ports(1)[0]
        cid = f"bench-ctr-{runtime_class}-{i}-{uuid.uuid4().hex[:6]}"
        self.ctr_ids.append(cid)
        logs = self.tmp / "ctr-logs"
        logs.mkdir(exist_ok=True)
        argv = ["run", "-d", "--log-uri", f"file://{logs / cid}.log"]
        argv += ["--snapshotter", self.args.snapshotter, "--env", f"AGENT_PORT={port}"]
        argv += ["--cpus", str(int(CPU_LIMIT[:-1]) / 1000)]
        argv += ["--memory-limit", str(MEMORY_LIMIT_BYTES)]
        if runtime_class == "gvisor":
            if os.environ.get("AGENTOS_RUNSC_RUNTIME"):
                argv += ["--runtime", os.environ["AGENTOS_RUNSC_RUNTIME"]]
            else:
                argv += ["--runc-binary", os.environ["AGENTOS_RUNSC_BINARY"]]
        else:
            argv += [] if cni is not None else ["--net-host"]
            if os.environ.get("AGENTOS_RUNC_RUNTIME"):
                argv += ["--runtime", os.environ["AGENTOS_RUNC_RUNTIME"]]
        t0 = time.perf_counter()
        host = "127.0.0.1"
        if cni is not None:
            netns, host = await cni.attach(cid)
            argv += ["--with-ns", f"network:{netns}"]
        argv += [os.environ["AGENTOS_EXAMPLE_IMAGE"], cid]
        await self.ctr.check(*argv)
        launched = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            if runtime_class == "gvisor" and cni is None:
                ok = await self._ready_gvisor(cid, attempt)
            else:
                ok = await self._ready_http(host, port)
            if ok:
                break
            if time.perf_counter() - t0 > self.args.start_timeout_s:
                raise TimeoutError(f"ctr container {cid} not ready")
            await asyncio.sleep(POLL_S)
        ready = time.perf_counter()
        await self.plane.runtime.inner.remove(cid)
        if cni is not None:
            await cni.detach(cid)
        return {
            "total": ready - t0,
            "ctr_run": launched - t0,
            "launch_to_probe_ok": ready - launched,
            "probes": float(attempt),
        }

    async def figure(self, runtime_class: str) -> dict[str, Any]:
        n, warmup = self.args.samples, self.args.warmup
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        for i in range(warmup + n):
            a = await self.agentos(runtime_class, i)
            c = await self.ctr_run(runtime_class, i)
            tag = "warm-up" if i < warmup else f"sample {i - warmup + 1}/{n}"
            detail = ", ".join(f"{k} {v if k == 'probes' else ms(v)}" for k, v in a.items())
            log(f"{runtime_class} {tag}: agentos {detail}; ctr {ms(c['total'])} ms")
            if i >= warmup:
                ours.append(a)
                theirs.append(c)

        def p50s(samples: list[dict[str, float]]) -> dict[str, float]:
            out = {}
            for key in samples[0]:
                if key != "total":
                    median = statistics.median(s[key] for s in samples)
                    out[key] = median if key == "probes" else ms(median)
            return out

        a_total = [s["total"] for s in ours]
        c_total = [s["total"] for s in theirs]
        return {
            "bench": "lifecycle_start",
            "runtime_class": runtime_class,
            "sandbox_network": "cni" if self.cni is not None else "none",
            "agentos_p50_ms": ms(statistics.median(a_total)),
            "agentos_p95_ms": ms(percentile(a_total, 95)),
            "ctr_p50_ms": ms(statistics.median(c_total)),
            "ctr_p95_ms": ms(percentile(c_total, 95)),
            "ratio_p50": round(statistics.median(a_total) / statistics.median(c_total), 2),
            "samples": n,
            "goal_ratio_p50": 1.3,
            "agentos_breakdown_p50_ms": p50s(ours),
            "ctr_breakdown_p50_ms": p50s(theirs),
            "probe_period_s": self.args.probe_period_s,
            "ctr_poll_ms": POLL_S * 1000,
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }


# -- figure 2: many agents at once -------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _kb_field(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def task_memory(pid: int) -> dict[str, int]:
    """Memory of one task, bytes: `rss` and `pss` summed over the processes of its memory
    cgroup (VmRSS from /proc/<pid>/status, Pss from smaps_rollup; the task pid alone if the
    cgroup cannot be read), `cgroup` (memory.usage_in_bytes / memory.current, page cache
    included), `shim` (VmRSS of the task's parent, its containerd shim)."""
    cgroup_dir: Path | None = None
    usage_file = ""
    for line in _read(Path(f"/proc/{pid}/cgroup")).splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            cgroup_dir, usage_file = Path("/sys/fs/cgroup/memory" + path), "memory.usage_in_bytes"
            break
        if hierarchy == "0" and cgroup_dir is None:
            for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                if Path(base + path, "memory.current").exists():
                    cgroup_dir, usage_file = Path(base + path), "memory.current"
    pids = [pid]
    cgroup = 0
    if cgroup_dir is not None:
        pids = [int(p) for p in _read(cgroup_dir / "cgroup.procs").split()] or [pid]
        cgroup = int(_read(cgroup_dir / usage_file).strip() or 0)
    rss = sum(_kb_field(_read(Path(f"/proc/{p}/status")), "VmRSS") for p in pids)
    pss = sum(_kb_field(_read(Path(f"/proc/{p}/smaps_rollup")), "Pss") for p in pids)
    stat = _read(Path(f"/proc/{pid}/stat"))
    ppid = int(stat.rsplit(")", 1)[1].split()[1]) if stat else 0
    shim = _kb_field(_read(Path(f"/proc/{ppid}/status")), "VmRSS") if ppid > 1 else 0
    return {"rss": rss, "pss": pss, "cgroup": cgroup, "shim": shim}


async def count(engine: AsyncEngine, *where: Any) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(agents).where(agents.c.name.like("scale-%"))
        return int((await conn.execute(query.where(*where))).scalar_one())


async def scale_figure(args: argparse.Namespace, plane: Plane) -> dict[str, Any]:
    n = args.scale_agents
    engine, runtime = plane.engine, plane.runtime.inner
    ports = free_ports(n)
    sem = asyncio.Semaphore(16)
    cpu0 = time.process_time()
    load0 = os.getloadavg()[0]
    calls0 = plane.runtime.snapshot()

    def calls_since(before: tuple[Counter[str], Counter[str]]) -> dict[str, list[float]]:
        """method → [calls, summed seconds] since `before`."""
        calls, busy = plane.runtime.snapshot()
        return {
            m: [calls[m] - before[0][m], round(busy[m] - before[1][m], 1)]
            for m in sorted(calls)
            if calls[m] - before[0][m]
        }

    async def create(i: int) -> None:
        manifest = agent_manifest(f"scale-{i}", "runc", ports[i], args.probe_period_s)
        async with sem:
            agent_id = await plane.apply(manifest)
        plane.controller.notify(agent_id)

    t0 = time.perf_counter()
    await asyncio.gather(*(create(i) for i in range(n)))
    create_s = time.perf_counter() - t0
    log(f"scale: {n} applied in {create_s:.1f}s")
    ready = failed = 0
    last_log = 0.0
    while time.perf_counter() - t0 < args.scale_timeout_s:
        ready = await count(engine, agents.c.phase == "Ready")
        if ready == n:
            break
        failed = await count(engine, agents.c.phase == "Failed")
        if time.perf_counter() - last_log >= 2:
            last_log = time.perf_counter()
            log(f"scale: {last_log - t0:6.1f}s ready={ready} failed={failed}")
        await asyncio.sleep(0.1)
    ready_s = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0
    log(f"scale: {ready}/{n} Ready after {ready_s:.1f}s")

    async with plane.uow() as uow:
        records = [a for a in await uow.agents.list() if a.name.startswith("scale-")]
    mem: list[dict[str, int]] = []
    for record in records:
        if record.phase.value != "Ready" or not record.status.sandboxID:
            continue
        status = await runtime.status(record.status.sandboxID)
        if status.pid:
            mem.append(await asyncio.to_thread(task_memory, status.pid))

    def per_agent_mb(key: str) -> float | None:
        return round(statistics.mean(m[key] for m in mem) / MIB, 2) if mem else None

    # Where the time went, per sandbox (from the runtime calls the controller made).
    timed = plane.runtime
    sids = [r.status.sandboxID for r in records if r.status.sandboxID in timed.first_ok]
    steps = {
        "apply_to_create_call": [timed.create_called[s] - t0 for s in sids],
        "create_and_start": [timed.started[s] - timed.create_called[s] for s in sids],
        "start_to_probe_ok": [timed.first_ok[s] - timed.started[s] for s in sids],
    }
    breakdown = {
        k: {"p50": ms(statistics.median(v)), "max": ms(max(v))} for k, v in steps.items() if v
    }
    first_probe_failed = sum(1 for s in sids if timed.probes[s] > 1)
    calls_until_ready = calls_since(calls0)

    t1 = time.perf_counter()
    calls1 = plane.runtime.snapshot()
    sem = asyncio.Semaphore(16)

    async def delete(i: int) -> None:
        async with sem:
            await plane.delete(f"scale-{i}")

    await asyncio.gather(*(delete(i) for i in range(n)))
    left = n
    leftover: list[str] = []
    while time.perf_counter() - t1 < args.scale_timeout_s:
        left = await count(engine)
        if left == 0:
            leftover = [
                s for s in await runtime.list_sandboxes() if s.startswith(f"{TENANT}-scale-")
            ]
            if not leftover:
                break
        await asyncio.sleep(0.1)
    teardown_s = time.perf_counter() - t1
    calls_teardown = calls_since(calls1)
    log(f"scale: teardown {teardown_s:.1f}s, agents left {left}, sandboxes left {len(leftover)}")
    return {
        "bench": "lifecycle_scale_runc",
        "agents": n,
        "all_ready": ready == n,
        "ready": ready,
        "failed": failed,
        "time_to_all_ready_s": round(ready_s, 2),
        "create_s": round(create_s, 2),
        "agents_per_s": round(ready / ready_s, 1),
        "memory_per_agent_mb": per_agent_mb("rss"),
        "memory_source": (
            "mean over Ready agents of the sum of VmRSS (/proc/<pid>/status) of the processes in "
            "the task's memory cgroup (cgroup.procs; task pid from containerd)"
        ),
        "memory_pss_per_agent_mb": per_agent_mb("pss"),
        "cgroup_memory_per_agent_mb": per_agent_mb("cgroup"),
        "shim_rss_per_agent_mb": per_agent_mb("shim"),
        "memory_measured_agents": len(mem),
        "breakdown_ms": breakdown,
        "agents_first_probe_failed": first_probe_failed,
        "runtime_calls_until_ready": calls_until_ready,
        "runtime_calls_teardown": calls_teardown,
        "teardown_s": round(teardown_s, 2),
        "all_gone": left == 0 and not leftover,
        "bench_process_cpu_s": round(cpu_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "workers": args.workers,
        "probe_period_s": args.probe_period_s,
        "loadavg_1m_at_start": round(load0, 2),
    }


# -- main --------------------------------------------------------------------------------------


async def prepare_namespace(ctr: Ctr, namespace: str) -> None:
    """The example image in our own namespace (imported from the archive `make services` built)."""
    archive = os.environ.get("AGENTOS_EXAMPLE_IMAGE_ARCHIVE", "")
    if not archive or not await asyncio.to_thread(os.path.isfile, archive):
        raise SystemExit("AGENTOS_EXAMPLE_IMAGE_ARCHIVE is not set or missing: make services")
    log(f"importing {archive} into containerd namespace {namespace}")
    await ctr.check("images", "import", "--snapshotter", ctr_snapshotter(), archive)


def ctr_snapshotter() -> str:
    return os.environ.get("CONTAINERD_SNAPSHOTTER") or "overlayfs"


async def cleanup(runtime: ContainerdRuntime, ids: set[str], everything: bool) -> None:
    """Remove the run's sandboxes (the controller's and ctr's) through the runtime; with
    `everything` (our own namespace), also any other agentos sandbox there."""
    if everything:
        with contextlib.suppress(Exception):
            ids |= set(await runtime.list_sandboxes())
    for sid in sorted(ids):
        try:
            await runtime.remove(sid)
        except Exception as exc:
            log(f"cleanup: removing {sid} failed: {exc}")


async def drop_namespace(ctr: Ctr, namespace: str) -> None:
    await ctr.run("images", "rm", "--sync", os.environ["AGENTOS_EXAMPLE_IMAGE"])
    for _ in range(20):  # snapshots go with containerd's GC
        rc, out = await ctr.run("namespaces", "rm", namespace)
        if rc == 0:
            return
        await asyncio.sleep(0.5)
    log(f"cleanup: containerd namespace {namespace} not removed: {out.strip()}")


async def bench(args: argparse.Namespace) -> None:
    # SIGTERM cancels the run like Ctrl-C does, so that the cleanup below still runs.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    own_namespace = args.namespace is None
    namespace = args.namespace or f"agentos-bench-{uuid.uuid4().hex[:6]}"
    address = os.environ["CONTAINERD_ADDRESS"]
    ctr = Ctr(address, namespace)
    args.snapshotter = ctr_snapshotter()
    tmp = Path(tempfile.mkdtemp(prefix="agentos-bench-lifecycle-"))
    runtime = ContainerdRuntime.from_env(
        {
            **os.environ,
            "CONTAINERD_NAMESPACE": namespace,
            "AGENTOS_SANDBOX_DIR": str(tmp / "sandboxes"),
        }
    )
    classes = ["runc"] + (["gvisor"] if "gvisor" in runtime.runtimes else [])
    if "gvisor" not in classes:
        log("no gVisor runtime configured (AGENTOS_RUNSC_RUNTIME / AGENTOS_RUNSC_BINARY)")
    timed = TimedRuntime(runtime)
    node = Node("bench", 64_000, 256 * 2**30, 100_000)
    start: StartBench | None = None
    try:
        if own_namespace:
            await prepare_namespace(ctr, namespace)
        async with control_plane(args, timed, node) as plane:
            start = StartBench(args, plane, ctr, tmp)
            if args.samples > 0:
                for runtime_class in classes:
                    emit(await start.figure(runtime_class))
            if args.scale_agents > 0:
                emit(await scale_figure(args, plane))
    finally:
        ours = set(timed.create_called) | set(start.ctr_ids if start else [])
        await cleanup(runtime, ours, everything=own_namespace)
        if start is not None:
            await start.http.aclose()
        if own_namespace:
            await drop_namespace(ctr, namespace)
        await runtime.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.with_simulated:
        from bench import lifecycle_sim

        sim_args = lifecycle_sim.parser().parse_args([])  # its defaults: the run of record
        log(f"simulated: {sim_args.agents} agents (bench.lifecycle_sim)")
        emit(await lifecycle_sim.main(sim_args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=10, help="start samples per runtime class")
    p.add_argument("--warmup", type=int, default=1, help="uncounted samples first, each side")
    p.add_argument("--scale-agents", type=int, default=200, help="0 skips the scale figure")
    p.add_argument(
        "--workers",
        type=int,
        default=ControllerConfig().workers,
        help="controller workers (serve's default)",
    )
    p.add_argument(
        "--probe-period-s", type=float, default=1.0, help="readiness periodSeconds (API default)"
    )
    p.add_argument("--start-timeout-s", type=float, default=120)
    p.add_argument("--scale-timeout-s", type=float, default=600)
    p.add_argument(
        "--namespace",
        default=None,
        help="containerd namespace holding AGENTOS_EXAMPLE_IMAGE (default: a new one, removed);\n"
        "not one in use: the controller removes agentos sandboxes its database does not know",
    )
    p.add_argument("--with-simulated", action="store_true", help="also bench.lifecycle_sim")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging("warning", fmt="console")
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()

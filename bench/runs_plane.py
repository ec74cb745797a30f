"""The runs benchmark's view of `agentos serve` (bench/runs.py): the API client, its agents
(bench/agents/run_agent.py in process sandboxes), runs, the database, and the handlers' stamps."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from harness.serve import ROOT, ServeProcess

# Its own folder: a script's folder is on sys.path, and bench/operator.py would shadow the
# standard library's `operator`.
AGENT_SCRIPT = ROOT / "bench" / "agents" / "run_agent.py"
TENANT = "bench-runs"


class Stamps(asyncio.DatagramProtocol):
    """The handlers' `start <run> <attempt> <ns>` datagrams, by (run, attempt)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], int] = {}
        self._waiters: dict[tuple[str, int], asyncio.Future[int]] = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        _, run, attempt, stamp = data.decode().split()
        key = (run, int(attempt))
        self.seen[key] = int(stamp)
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(int(stamp))

    async def wait(self, run: str, attempt: int, timeout_s: float) -> int:
        """The handler-start stamp of `run` on `attempt` (TimeoutError after `timeout_s`)."""
        key = (run, attempt)
        if key in self.seen:
            return self.seen[key]
        waiter = self._waiters.setdefault(key, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(waiter, timeout_s)


class Plane:
    """The benchmark's view of serve: its API client, the agents, the runs, the database."""

    def __init__(self, serve: ServeProcess, dsn: str, stamps: Stamps, stamp_port: int) -> None:
        self.serve = serve
        self.dsn = dsn
        self.stamps = stamps
        self.stamp_port = stamp_port
        self.markers = serve.tmp / "markers"
        self.markers.mkdir(exist_ok=True)
        self.http = httpx.AsyncClient(
            base_url=serve.base,
            headers={"Authorization": f"Bearer {serve.token}"},
            timeout=30,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self.api = f"/api/v1/tenants/{TENANT}"

    async def apply_agent(self, name: str, **runs: Any) -> None:
        manifest = {
            "apiVersion": "agentos.io/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": name},
            "spec": {
                "image": "local/bench-run-agent",
                "command": [sys.executable, str(AGENT_SCRIPT)],
                "runtime": {"class": "process"},
                "restartPolicy": "Always",
                "readiness": {"heartbeat": {}, "periodSeconds": 1},
                "env": [
                    {"name": "PYTHONPATH", "value": str(ROOT / "sdk" / "python")},
                    {"name": "BENCH_STAMP_PORT", "value": str(self.stamp_port)},
                    {"name": "BENCH_MARKER_DIR", "value": str(self.markers)},
                ],
                "runs": runs,
            },
        }
        answer = await self.http.post(f"{self.api}/agents", json=manifest)
        if answer.status_code != 201:
            raise RuntimeError(f"agent {name}: {answer.status_code} {answer.text}")

    async def agent(self, name: str) -> dict[str, Any]:
        answer = await self.http.get(f"{self.api}/agents/{name}")
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body

    async def wait_ready(self, names: list[str], timeout_s: float) -> None:
        pending = set(names)
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} agents not Ready within {timeout_s}s: {last}")
            for name in sorted(pending):
                last = (await self.agent(name))["status"]
                if last.get("phase") == "Ready":
                    pending.discard(name)
            await asyncio.sleep(0.5)

    async def submit(self, agent: str, run_input: Any) -> tuple[str, int, int]:
        """(run name, ns before the POST, ns at its 201)."""
        started = time.time_ns()
        answer = await self.http.post(f"{self.api}/agents/{agent}/runs", json={"input": run_input})
        answered = time.time_ns()
        if answer.status_code != 201:
            raise RuntimeError(f"create run: {answer.status_code} {answer.text}")
        return str(answer.json()["metadata"]["name"]), started, answered

    async def run_status(self, name: str) -> dict[str, Any]:
        answer = await self.http.get(f"{self.api}/runs/{name}")
        answer.raise_for_status()
        status: dict[str, Any] = answer.json()["status"]
        return status

    async def wait_run(
        self, name: str, done: Callable[[dict[str, Any]], bool], timeout_s: float, poll_s: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = await self.run_status(name)
            if done(status):
                return status
            await asyncio.sleep(poll_s)
        raise TimeoutError(f"run {name} not as expected within {timeout_s}s")

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

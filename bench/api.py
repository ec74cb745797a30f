"""Benchmark: the REST API on PostgreSQL with the simulated runtime, from a loopback load
generator, against a bare FastAPI endpoint doing one primary-key SELECT (the baseline).

Not a test. Starts, on a fresh PostgreSQL database, `agentos serve` (API + controller on the
simulated runtime; auth, rate limit off) and a bare FastAPI app in another process, then
drives them *open-loop* (requests are sent on a fixed schedule whatever the answers, and
latency is counted from the scheduled time, so a slow server cannot hide its queue):
creates at 200/s, GETs at 1,000/s, and the baseline's GETs at 1,000/s. Prints one JSON
line: p50/p95/p99 in ms, error rate, achieved rate, and get-p95 / baseline-p95.

    python -m bench.api [--seconds 10] [--create-rate 200] [--get-rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from harness.ports import free_port
from harness.postgres import create_database, drop_database
from harness.stats import percentile
from harness.waiting import wait_until

GOAL = {"create_p95_ms": 20.0, "get_p95_ms": 5.0, "error_rate": 0.0}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def baseline_app() -> Any:
    """A bare FastAPI app: one route, one primary-key SELECT on the agents table."""
    from fastapi import FastAPI, HTTPException
    from sqlalchemy import select

    from controlplane.data.engine import create_engine
    from controlplane.data.tables import agents

    engine = create_engine(os.environ["AGENTOS_DATABASE_URL"])
    app = FastAPI()

    @app.get("/baseline/{agent_id}")
    async def one(agent_id: str) -> dict[str, Any]:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    select(agents.c.id, agents.c.spec).where(agents.c.id == agent_id)
                )
            ).first()
        if row is None:
            raise HTTPException(404)
        return {"id": row.id, "spec": row.spec}

    return app


class Loopback:
    """A minimal HTTP/1.1 keep-alive client over `size` connections: the load generator.

    httpx spends milliseconds of CPU per request once thousands wait for its pool, and the
    generator shares two cores with the server and PostgreSQL; this one spends microseconds,
    so what is measured is the server.
    """

    def __init__(self, port: int, headers: dict[str, str], size: int = 64) -> None:
        self.port = port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.size = size
        self.pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def open(self) -> None:
        for _ in range(self.size):
            self.pool.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))

    async def close(self) -> None:
        while not self.pool.empty():
            _, writer = self.pool.get_nowait()
            writer.close()

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """(status, body) of one request on a pooled connection."""
        payload = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.extra}"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        reader, writer = await self.pool.get()
        try:
            writer.write(head.encode() + b"\r\n" + payload)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            data = await reader.readexactly(length)
        finally:
            self.pool.put_nowait((reader, writer))
        return int(status_line.split()[1]), data


async def open_loop(rate: float, seconds: float, request: Callable[[int], Any]) -> dict[str, Any]:
    """Send `request(i)` at `rate` per second for `seconds`; latency from the schedule."""
    total = int(rate * seconds)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        scheduled = start + i / rate
        try:
            status = await request(i)
            ok, reason = status < 400, str(status)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            ok, reason = False, type(exc).__name__
        latencies.append((time.perf_counter() - scheduled) * 1000)
        if not ok:
            errors[reason] = errors.get(reason, 0) + 1

    tasks = []
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return {
        "requests": total,
        "rate_per_s": rate,
        "achieved_per_s": round(total / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "error_rate": round(sum(errors.values()) / total, 4),
        "errors": errors,
    }


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name, "labels": {"bench": "api"}},
        "spec": {"image": "bench/none", "runtime": {"class": "runc"}, "command": ["true"]},
    }


def start(cmd: list[str], env: dict[str, str], url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def up() -> bool:
        assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"").decode()
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.TransportError:
            return False

    wait_until(up, 60, f"{cmd[-1]} answering")
    return proc


async def main(args: argparse.Namespace) -> dict[str, Any]:
    admin_dsn = os.environ["AGENTOS_PG_ADMIN_DSN"]
    name, url = await create_database(
        admin_dsn, os.environ["AGENTOS_DATABASE_URL"], "agentos_bench_api"
    )
    api_port, base_port = free_port(), free_port()
    env = {
        **os.environ,
        "AGENTOS_DATABASE_URL": url,
        "AGENTOS_RUNTIME": "simulated",
        "AGENTOS_PORT": str(api_port),
        "AGENTOS_GRPC_PORT": "0",
        "AGENTOS_RATE_LIMIT_PER_S": "0",
        "AGENTOS_LOG_LEVEL": "warning",
        "AGENTOS_NODE_MAX_AGENTS": "1000000",
        # The API alone, as measured before the embedded nats-server existed: no relay.
        "AGENTOS_EMBEDDED_NATS": "false",
    }
    env.pop("AGENTOS_NATS_URL", None)
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "controlplane.cli.main", "token", "create", "--principal",
         "bench", "--platform-admin"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    token = made.stdout.strip()
    serve = start(
        [sys.executable, "-m", "controlplane.cli.main", "serve"],
        env,
        f"http://127.0.0.1:{api_port}/healthz",
    )
    base = start(
        [sys.executable, "-m", "uvicorn", "--factory", "bench.api:baseline_app", "--port",
         str(base_port), "--log-level", "warning", "--no-access-log"],
        env,
        f"http://127.0.0.1:{base_port}/baseline/none",
    )  # fmt: skip
    api = Loopback(api_port, {"Authorization": f"Bearer {token}"})
    bare = Loopback(base_port, {})
    try:
        await api.open()
        await bare.open()
        for i in range(50):  # warm-up: connections, the tenant, caches
            await api.request("POST", "/api/v1/tenants/bench/agents", manifest(f"warm-{i}"))
        names: list[str] = []
        ids: list[str] = []

        async def create(i: int) -> int:
            status, data = await api.request(
                "POST",
                "/api/v1/tenants/bench/agents",
                manifest(f"agent-{i}"),
                {"Idempotency-Key": f"bench-{i}"},
            )
            if status == 201:
                meta = json.loads(data)["metadata"]
                names.append(meta["name"])
                ids.append(meta["uid"])
            return status

        async def get(i: int) -> int:
            path = f"/api/v1/tenants/bench/agents/{rng.choice(names)}"
            return (await api.request("GET", path))[0]

        async def baseline(i: int) -> int:
            return (await bare.request("GET", f"/baseline/{rng.choice(ids)}"))[0]

        rng = random.Random(7)
        log(f"creates at {args.create_rate}/s for {args.seconds}s")
        creates = await open_loop(args.create_rate, args.seconds, create)
        log(f"GETs at {args.get_rate}/s for {args.seconds}s")
        gets = await open_loop(args.get_rate, args.seconds, get)
        log(f"baseline GETs at {args.get_rate}/s for {args.seconds}s")
        base_gets = await open_loop(args.get_rate, args.seconds, baseline)
        await api.close()
        await bare.close()
    finally:
        for proc in (serve, base):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        await drop_database(admin_dsn, name)
    met = (
        creates["p95_ms"] <= GOAL["create_p95_ms"]
        and gets["p95_ms"] <= GOAL["get_p95_ms"]
        and creates["error_rate"] == gets["error_rate"] == 0
    )
    return {
        "bench": "api",
        "database": "postgresql",
        "runtime": "simulated",
        "cpus": os.cpu_count(),
        "create": creates,
        "get": gets,
        "baseline_get": base_gets,
        "get_p95_vs_baseline": round(gets["p95_ms"] / base_gets["p95_ms"], 2),
        "get_p50_vs_baseline": round(gets["p50_ms"] / base_gets["p50_ms"], 2),
        "goal": GOAL,
        "goal_met": met,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--create-rate", type=float, default=200.0)
    p.add_argument("--get-rate", type=float, default=1000.0)
    return p


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parser().parse_args()))))

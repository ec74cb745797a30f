"""Model proxy benchmark: the latency the agent gateway adds to a model call.

    set -a; . .services/env; set +a; uv run --frozen python -m bench.gateway [--rate 200 ...]

Against a scratch database (from AGENTOS_PG_ADMIN_DSN, dropped at the end), a private
nats-server, `agentos serve` in its own process (process runtime, log level warning) with
one SDK agent (bench/agents/run_agent.py) holding one run Running, and the test double of
an OpenAI-compatible provider (tests/doubles/openai_upstream.py) in a process of its own.
The load generator (asyncio + httpx, one connection pool per target) offers `--rate`
non-streaming chat completions per second, open loop (each request starts at its scheduled
instant whether or not earlier ones have answered; latency is counted from that instant),
for `--seconds`, first straight to the double and then through the gateway's
`/v1/chat/completions` with the agent's credential and `AgentOS-Run`, in the same run.
Each phase is preceded by a warm-up of `--warmup-seconds` (not counted).

One JSON line per figure on stdout (`{"bench": "gateway", "figure": ...}`): `direct` and
`gateway` (p50/p99/max ms, achieved rate, errors) and `overhead` (p50 and p99 added, the
goal p50 <= 2 ms). Goals are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from bench.runs_plane import AGENT_SCRIPT, TENANT, Plane, Stamps
from harness.nats import PrivateNats
from harness.postgres import create_database, drop_database
from harness.serve import ServeProcess

SECRET = "sk-bench-double"
KEY_ENV = "BENCH_MODEL_KEY"
BODY = {"model": "double-chat", "messages": [{"role": "user", "content": "hi"}]}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def figure(name: str, **values: Any) -> None:
    print(json.dumps({"bench": "gateway", "figure": name, **values}), flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def offer(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], rate: float, seconds: float
) -> tuple[list[float], int, float]:
    """Open loop: `rate` requests/s for `seconds`; (latencies ms, errors, achieved rate)."""
    latencies: list[float] = []
    errors = 0
    data = json.dumps(BODY).encode()

    async def one(scheduled: float) -> None:
        nonlocal errors
        try:
            answer = await client.post(url, content=data, headers=headers)
            if answer.status_code != 200:
                errors += 1
                return
        except httpx.HTTPError:
            errors += 1
            return
        latencies.append((time.perf_counter() - scheduled) * 1000)

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    count = int(rate * seconds)
    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    took = time.perf_counter() - start
    return latencies, errors, count / took


def summary(latencies: list[float], errors: int, achieved: float) -> dict[str, Any]:
    return {
        "requests": len(latencies) + errors,
        "errors": errors,
        "achieved_rate": round(achieved, 1),
        "p50_ms": round(statistics.median(latencies), 3) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(max(latencies), 3) if latencies else None,
    }


async def hold_a_run(plane: Plane) -> tuple[str, str]:
    """One agent with one run Running (mode hold): (its credential, the run's name)."""
    await plane.apply_agent("caller", concurrency=1)
    await plane.wait_ready(["caller"], 90)
    run, _, _ = await plane.submit("caller", {"mode": "hold"})
    await plane.wait_run(run, lambda s: s["phase"] == "Running", 60, 0.2)
    sandbox = (await plane.agent("caller"))["status"]["sandboxID"]
    spec = json.loads((plane.serve.state_dir / "process" / sandbox / "spec.json").read_text())
    return str(spec["env"]["AGENTOS_AGENT_TOKEN"]), run


class Upstream:
    """The test double in its own process: `base_url`, `stop()`."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.doubles.openai_upstream", "--credential", SECRET],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.base_url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}/v1"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


async def measure(plane: Plane, upstream: Upstream, args: argparse.Namespace) -> None:
    await plane.http.put(f"/api/v1/tenants/{TENANT}", json={"quota": {}})
    provider = {
        "baseUrl": upstream.base_url,
        "credentialRef": {"env": KEY_ENV},
        "models": ["double-chat"],
        "pricing": {"input": "0.15", "output": "0.60"},
    }
    answer = await plane.http.put(f"/api/v1/tenants/{TENANT}/models/double", json=provider)
    answer.raise_for_status()
    token, run = await hold_a_run(plane)
    gateway = f"http://127.0.0.1:{plane.serve.env['AGENTOS_GATEWAY_PORT']}"
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=32)
    targets = {
        "direct": (upstream.base_url + "/chat/completions", {"Authorization": f"Bearer {SECRET}"}),
        "gateway": (
            gateway + "/v1/chat/completions",
            {"Authorization": f"Bearer {token}", "AgentOS-Run": run},
        ),
    }
    results: dict[str, dict[str, Any]] = {}
    conditions = {"rate": args.rate, "seconds": args.seconds, "cpus": os.cpu_count()}
    for name, (url, headers) in targets.items():
        headers = {**headers, "Content-Type": "application/json"}
        async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:
            log(f"{name}: warm-up {args.warmup_seconds}s at {args.rate}/s")
            await offer(client, url, headers, args.rate, args.warmup_seconds)
            log(f"{name}: {args.seconds}s at {args.rate}/s")
            results[name] = summary(*await offer(client, url, headers, args.rate, args.seconds))
        figure(name, **results[name], **conditions)
    direct, through = results["direct"], results["gateway"]
    if direct["p50_ms"] is not None and through["p50_ms"] is not None:
        figure(
            "overhead",
            p50_added_ms=round(through["p50_ms"] - direct["p50_ms"], 3),
            p99_added_ms=round(through["p99_ms"] - direct["p99_ms"], 3),
            goal_p50_ms=2.0,
            **conditions,
        )
    steps = await plane.query("SELECT count(*) AS n FROM run_steps WHERE type = 'llm'")
    log(f"llm steps recorded: {steps[0]['n']}")


async def bench(args: argparse.Namespace) -> None:
    admin_dsn = os.environ.get("AGENTOS_PG_ADMIN_DSN", "")
    database_url = os.environ.get("AGENTOS_DATABASE_URL", "")
    if not admin_dsn or not database_url:
        raise SystemExit("AGENTOS_PG_ADMIN_DSN / AGENTOS_DATABASE_URL unset: load .services/env")
    tmp = Path(tempfile.mkdtemp(prefix="agentos-bench-gateway-"))
    private = PrivateNats()
    serve: ServeProcess | None = None
    name = ""
    try:
        private.start()
        name, url = await create_database(admin_dsn, database_url, "agentos_bench_gateway")
        settings = {
            "AGENTOS_RUNTIME": "process",
            "AGENTOS_RATE_LIMIT_PER_S": "0",
            "AGENTOS_LOG_LEVEL": "warning",
            "AGENTOS_LOG_FORMAT": "json",
        }
        serve = ServeProcess(tmp, url, private.url, settings)
        serve.env[KEY_ENV] = SECRET
        await asyncio.to_thread(serve.create_token)
        await asyncio.to_thread(serve.start)
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        plane = Plane(serve, dsn, Stamps(), 9)  # the agent's stamps go nowhere (discard port)
        upstream = Upstream()
        try:
            await measure(plane, upstream, args)
        finally:
            upstream.stop()
            await plane.http.aclose()
    except BaseException:
        if serve is not None:
            log(f"serve log tail:\n{serve.log_tail(3000)}")
        raise
    finally:
        if serve is not None:
            await asyncio.to_thread(serve.stop)
            await asyncio.to_thread(serve.kill_sandboxes, str(AGENT_SCRIPT))
        if name:
            await drop_database(admin_dsn, name)
        private.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=200.0, help="requests/s offered")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per target")
    p.add_argument("--warmup-seconds", type=float, default=3.0)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(bench(parse_args(argv)))


if __name__ == "__main__":
    main()

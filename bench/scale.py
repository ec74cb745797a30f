"""Benchmark: whether the hot reads keep their latency as the data grows.

Not a test. For each size (1,000 and 100,000 agents, with ten outbox rows and three
transitions per agent: 1,000,000 outbox rows at the 100k point), a scratch PostgreSQL
database is filled in bulk (INSERT … SELECT over generate_series, server side, through the
tables the repositories use, harness/bulk.py), VACUUM ANALYZEd, and `agentos serve` (the API
alone) is started on it. Then, from this process, one request at a time:

- `get`: GET of one agent (random names);
- `list_first_page`, `list_deep_page` (a continue token from the middle of the tenant),
  `list_label_selector` (first page of `team=t3`), `limit=100` each;
- `watch_from_now`: a watch from a list's resourceVersion, then a label change of one agent;
  the time from the write's answer to the event's line (the watch polls the feed every
  AGENTOS_WATCH_POLL_INTERVAL_S, 0.2 s by default, which bounds it from below);
- `relay_claim`, `relay_pending`: the relay's own queries (RelayStore.claim_pending, the
  one statement a relay cycle runs on PostgreSQL to lease and read, and .pending, from
  controlplane/data/outbox/relay_store.py; batch 256, 32 per aggregate) with 500
  unpublished rows, whatever the table's size.

One JSON line per figure with both sizes' p50/p95 and `ratio` (p50 at 100k over p50 at 1k;
goal ≤ 1.2), then a summary line.

    python -m bench.scale [--sizes 1000,100000] [--requests 100]
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
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import text

from bench.api import serve_env, start
from bench.api_load import manifest
from controlplane.data.engine import create_engine
from controlplane.data.outbox.relay_store import RelayStore
from controlplane.service.listing import encode_continue
from harness.bulk import agent_name, fill_agents
from harness.ports import free_port
from harness.postgres import create_database, drop_database
from harness.stats import percentile

GOAL_RATIO = 1.2
UNPUBLISHED = 500
TENANT = "bench"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def fill(url: str, n: int) -> float:
    """Add `n` agents (and their rows) next to the template; seconds it took."""
    started = time.perf_counter()
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await fill_agents(conn, TENANT, n, unpublished=UNPUBLISHED)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            # VACUUM too: a steady-state table is vacuumed; otherwise autovacuum would work
            # through the fresh rows during the measurement.
            await conn.execute(text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def timed(count: int, one: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    """p50/p95 in ms of `count` sequential calls of `one(i)`."""
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        await one(i)
        latencies.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
    }


async def watch_from_now(client: httpx.AsyncClient, rounds: int) -> dict[str, float]:
    """Time from a write's answer to its watch event, over `rounds` writes."""
    path = f"/api/v1/tenants/{TENANT}/agents"
    latencies = []
    for i in range(rounds):
        version = (await client.get(path, params={"limit": 1})).json()["metadata"]
        params = {"watch": "true", "resourceVersion": version["resourceVersion"]}
        async with client.stream("GET", path, params={**params, "timeoutSeconds": 30}) as s:
            lines = s.aiter_lines()
            body = manifest("template")
            body["metadata"]["labels"] = {"round": str(i)}
            r = await client.put(f"{path}/template", json=body)
            r.raise_for_status()
            written = time.perf_counter()
            async for line in lines:
                if json.loads(line)["type"] == "MODIFIED":
                    break
            latencies.append((time.perf_counter() - written) * 1000)
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
    }


async def relay_queries(url: str, count: int) -> dict[str, dict[str, float]]:
    """The relay's claim (`claim_pending`: the one statement that leases and reads, as the
    relay runs it on PostgreSQL) and pending, `count` times each (leases of 1 ms: each
    claim sees the same due rows)."""
    engine = create_engine(url)
    store = RelayStore(engine)
    try:
        keys = await store.claim("bench", 0.001, 256)
        claim = await timed(count, lambda i: store.claim_pending(f"bench-{i}", 0.001, 256, 32))
        pending = await timed(count, lambda i: store.pending(keys, 32))
        rows = len(await store.pending(keys, 32))
    finally:
        await engine.dispose()
    return {
        "relay_claim": {**claim, "aggregates": len(keys)},
        "relay_pending": {**pending, "rows": rows},
    }


async def measure(size: int, requests: int) -> dict[str, Any]:
    """Every figure at `size` agents, on a database of its own."""
    admin_dsn = os.environ["AGENTOS_PG_ADMIN_DSN"]
    name, url = await create_database(
        admin_dsn, os.environ["AGENTOS_DATABASE_URL"], "agentos_bench_scale"
    )
    port = free_port()
    env = serve_env(url, port, 1)
    serve = None
    try:
        made = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "controlplane.cli.main", "token", "create", "--principal",
             "bench", "--platform-admin"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        serve = start(
            [sys.executable, "-m", "controlplane.cli.main", "serve"],
            env,
            f"http://127.0.0.1:{port}/healthz",
        )
        headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60
        ) as client:
            path = f"/api/v1/tenants/{TENANT}/agents"
            (await client.post(path, json=manifest("template"))).raise_for_status()
            log(f"{size} agents: filling")
            fill_s = await fill(url, size)
            log(f"{size} agents: filled in {fill_s:.1f} s; measuring")
            figures = await _api_figures(client, size, requests)
        figures.update(await relay_queries(url, requests))
        return {"fill_s": round(fill_s, 1), "figures": figures}
    finally:
        if serve is not None:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=30)
        await drop_database(admin_dsn, name)


async def _api_figures(
    client: httpx.AsyncClient, size: int, requests: int
) -> dict[str, dict[str, float]]:
    path = f"/api/v1/tenants/{TENANT}/agents"
    rng = random.Random(7)

    async def ok(url: str, **params: Any) -> None:
        (await client.get(url, params=params)).raise_for_status()

    deep = encode_continue(agent_name(size // 2))
    await timed(20, lambda i: ok(f"{path}/{agent_name(rng.randint(1, size))}"))  # warm-up
    return {
        "get": await timed(requests, lambda i: ok(f"{path}/{agent_name(rng.randint(1, size))}")),
        "list_first_page": await timed(requests, lambda i: ok(path, limit=100)),
        "list_deep_page": await timed(
            requests, lambda i: ok(path, limit=100, **{"continue": deep})
        ),
        "list_label_selector": await timed(
            requests, lambda i: ok(path, limit=100, labelSelector="team=t3")
        ),
        "watch_from_now": await watch_from_now(client, max(5, requests // 10)),
    }


def lines(small: int, large: int, results: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per figure (both sizes, ratio of p50s), then the summary."""
    out = []
    for figure, at_small in results[small]["figures"].items():
        at_large = results[large]["figures"][figure]
        ratio = round(at_large["p50_ms"] / at_small["p50_ms"], 2)
        out.append(
            {
                "bench": "scale",
                "figure": figure,
                f"at_{small}": at_small,
                f"at_{large}": at_large,
                "ratio": ratio,
                "goal_ratio": GOAL_RATIO,
                "goal_met": ratio <= GOAL_RATIO,
            }
        )
    out.append(
        {
            "bench": "scale",
            "figure": "summary",
            "sizes": [small, large],
            "outbox_rows": [small * 10, large * 10],
            "unpublished_rows": UNPUBLISHED,
            "fill_s": [results[small]["fill_s"], results[large]["fill_s"]],
            "worst_ratio": max(line["ratio"] for line in out),
            "cpus": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "goal_met": all(line["goal_met"] for line in out),
        }
    )
    return out


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    small, large = (int(s) for s in args.sizes.split(","))
    results = {size: await measure(size, args.requests) for size in (small, large)}
    return lines(small, large, results)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="1000,100000")
    p.add_argument("--requests", type=int, default=100)
    return p


if __name__ == "__main__":
    for line in asyncio.run(main(parser().parse_args())):
        print(json.dumps(line), flush=True)

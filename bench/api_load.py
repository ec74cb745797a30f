"""The load generator of bench/api.py, in a process of its own (so its CPU is not the
server's): HTTP/1.1 keep-alive over raw asyncio streams on uvloop, microseconds per request.

Two modes, printed as one JSON object on stdout:

- `closed`: `--concurrency` connections, each sending its next request as soon as the last
  answered, for `--seconds`: the throughput is the server's saturation throughput.
- `open`: requests sent on a fixed schedule at `--rate` whatever the answers (latency is
  counted from the scheduled time, so a slow server cannot hide its queue), over a pool of
  `--concurrency` connections.

    python -m bench.api_load --port P --kind get --targets FILE --mode closed --seconds 6
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.stats import percentile

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def manifest(name: str) -> dict[str, Any]:
    """The Agent every create sends (simulated runtime: no sandbox)."""
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name, "labels": {"bench": "api"}},
        "spec": {"image": "bench/none", "runtime": {"class": "runc"}, "command": ["true"]},
    }


def request_maker(args: argparse.Namespace) -> Callable[[int], bytes]:
    """i → the bytes of request i of `args.kind` (get, create, bare)."""
    targets: list[str] = json.loads(Path(args.targets).read_text()) if args.targets else []
    rng = random.Random(args.seed)
    auth = f"Authorization: Bearer {args.token}\r\n" if args.token else ""
    host = "Host: 127.0.0.1\r\n"
    if args.kind == "get":
        return lambda i: (
            f"GET /api/v1/tenants/bench/agents/{rng.choice(targets)} HTTP/1.1\r\n{host}{auth}\r\n"
        ).encode()
    if args.kind == "bare":
        return lambda i: f"GET /baseline/{rng.choice(targets)} HTTP/1.1\r\n{host}\r\n".encode()

    def create(i: int) -> bytes:
        body = json.dumps(manifest(f"{args.prefix}-{i}")).encode()
        key = f"Idempotency-Key: {args.prefix}-{i}\r\n" if args.idempotency_key else ""
        head = (
            f"POST /api/v1/tenants/bench/agents HTTP/1.1\r\n{host}{auth}{key}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    return create


async def exchange(conn: Connection, payload: bytes) -> int:
    """Send one request on `conn`, read its whole response; its status code."""
    reader, writer = conn
    writer.write(payload)
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


class Tally:
    """Latencies (ms) and errors by reason."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    async def one(self, conn: Connection, payload: bytes, since: float) -> None:
        try:
            status = await exchange(conn, payload)
            reason = None if status < 400 else str(status)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            reason = type(exc).__name__
        self.latencies.append((time.perf_counter() - since) * 1000)
        if reason is not None:
            self.errors[reason] = self.errors.get(reason, 0) + 1

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        n = len(self.latencies)
        return {
            "requests": n,
            "seconds": round(elapsed_s, 2),
            "throughput_per_s": round(n / elapsed_s, 1),
            "p50_ms": round(statistics.median(self.latencies), 2),
            "p95_ms": round(percentile(self.latencies, 95), 2),
            "p99_ms": round(percentile(self.latencies, 99), 2),
            "error_rate": round(sum(self.errors.values()) / max(n, 1), 4),
            "errors": self.errors,
        }


async def connect(port: int, n: int) -> list[Connection]:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]


async def closed_loop(args: argparse.Namespace, make: Callable[[int], bytes]) -> dict[str, Any]:
    conns = await connect(args.port, args.concurrency)
    counter = itertools.count()
    tally = Tally()
    start = time.perf_counter()
    deadline = start + args.seconds

    async def worker(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            await tally.one(conn, make(next(counter)), time.perf_counter())

    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - start
    for _, writer in conns:
        writer.close()
    return {"mode": "closed", "concurrency": args.concurrency, **tally.summary(elapsed)}


async def open_loop(args: argparse.Namespace, make: Callable[[int], bytes]) -> dict[str, Any]:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in await connect(args.port, args.concurrency):
        pool.put_nowait(conn)
    tally = Tally()
    total = int(args.rate * args.seconds)
    start = time.perf_counter() + 0.05

    async def one(i: int, scheduled: float) -> None:
        conn = await pool.get()
        try:
            await tally.one(conn, make(i), scheduled)
        finally:
            pool.put_nowait(conn)

    tasks = []
    for i in range(total):
        scheduled = start + i / args.rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    return {"mode": "open", "offered_per_s": args.rate, **tally.summary(elapsed)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--kind", choices=("get", "create", "bare"), required=True)
    p.add_argument("--mode", choices=("closed", "open"), default="closed")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--targets", default="", help="JSON list of names (get) or ids (bare)")
    p.add_argument("--token", default="")
    p.add_argument("--prefix", default="agent")
    p.add_argument("--idempotency-key", action="store_true")
    p.add_argument("--seed", type=int, default=7)
    return p


async def run(args: argparse.Namespace) -> dict[str, Any]:
    make = request_maker(args)
    return await (closed_loop if args.mode == "closed" else open_loop)(args, make)


if __name__ == "__main__":
    import uvloop

    print(json.dumps(uvloop.run(run(parser().parse_args()))))

"""bench-outbox's writers: events committed at a steady rate, from child processes.

Started by `bench.outbox` (`python -m bench.outbox --writer-child ...`): each child prints
READY, reads the start time (time.monotonic, one clock for every process of the host) on
stdin, writes its share of the events at their absolute deadlines, and prints its results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from controlplane.bootstrap import schema_registry
from controlplane.data.engine import create_engine
from controlplane.data.outbox.wire import encode_envelope
from controlplane.data.unit_of_work import OUTBOX_CHANNEL, UnitOfWork
from controlplane.domain.events.envelope import EventEnvelope, NewEvent, OutboxState


def asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def bench_event(aggregate: int, n: int, prefix: str = "bench") -> NewEvent:
    tenant = f"{prefix}-{aggregate:05d}"
    return NewEvent(
        event_type="tenant.quota_changed",
        aggregate_type="tenant",
        aggregate_id=tenant,
        tenant_id=tenant,
        trace_id=uuid.uuid4().hex,
        payload={
            "name": tenant,
            "quota": {"agents": n, "cpu_millis": 4000, "memory_bytes": 8 << 30},
        },
    )


async def paced_writer(
    url: str,
    rate: float,
    seconds: float,
    aggregates: int,
    concurrency: int,
    start_at: float | Callable[[], Awaitable[float]],
    index: int = 0,
    stride: int = 1,
    path: str = "sql",
) -> dict[str, Any]:
    """Commit one event per transaction, event i at its absolute deadline `start_at + i/rate`
    (time.monotonic), for the i ≡ index (mod stride) of this writer (`start_at` a
    coroutine function: awaited for it once the connections are open); returns event id →
    (stamp before COMMIT, COMMIT returned), the errors, and how many deadlines were missed by
    over 5 ms. `path` `uow`: through the UnitOfWork; `sql`: the same statements on asyncpg
    (see `sql_commit`)."""
    engine = create_engine(url, pool_size=concurrency // 2 + 1)
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=concurrency)
    registry = schema_registry()
    total = int(rate * seconds)
    commits: dict[str, tuple[float, float]] = {}  # event id → (commit called, commit returned)
    errors: list[str] = []
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    late = 0

    async def one(i: int) -> None:
        try:
            event = bench_event(i % aggregates, i, prefix="steady")
            if path == "sql":
                before = await sql_commit(pool, event)
            else:
                async with UnitOfWork(engine, registry) as uow:
                    await uow.outbox.add(event)
                    before = time.monotonic()
                    await uow.commit()
            commits[event.event_id] = (before, time.monotonic())
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            slots.release()

    # Warm the pools so the first commits do not pay for connecting (three children
    # connecting at once on 2 cores took longer than the 2 s lead: the first second's events
    # were all late, and went out as one burst).
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SELECT 1")
    warm = [await pool.acquire() for _ in range(concurrency)]
    for conn in warm:
        await pool.release(conn)
    if not isinstance(start_at, float | int):
        start_at = await start_at()
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    for i in range(index, total, stride):
        delay = start_at + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            late += 1
        await slots.acquire()
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    await engine.dispose()
    await pool.close()
    return {"commits": commits, "errors": errors, "late": late}


_NEXT_SEQUENCE = (
    "INSERT INTO aggregate_sequences (aggregate_type, aggregate_id, last_sequence)"
    " VALUES ($1, $2, 1) ON CONFLICT (aggregate_type, aggregate_id)"
    " DO UPDATE SET last_sequence = aggregate_sequences.last_sequence + 1 RETURNING last_sequence"
)
_INSERT_EVENT = (
    "INSERT INTO outbox (event_id, event_type, schema_version, aggregate_type, aggregate_id,"
    " sequence, tenant_id, agent_id, trace_id, traceparent, occurred_at, payload, state,"
    " next_attempt_at, encoded_envelope)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11::jsonb, $12, $10, $13)"
)


async def sql_commit(pool: asyncpg.Pool, event: NewEvent) -> float:
    """Write `event` as OutboxWriter.add and UnitOfWork.commit do (sequence upsert, outbox
    row with its encoded envelope, NOTIFY, COMMIT), in prepared statements on asyncpg: about
    a fifth of the UnitOfWork's CPU, so that a 2-core machine can offer 1,000 events/s with
    the relay's share left. Returns the monotonic stamp read just before COMMIT."""
    async with pool.acquire() as conn, conn.transaction():
        sequence = await conn.fetchval(_NEXT_SEQUENCE, event.aggregate_type, event.aggregate_id)
        envelope = EventEnvelope(
            event_id=event.event_id,
            event_type=event.event_type,
            schema_version=event.schema_version,
            occurred_at=event.occurred_at,
            trace_id=event.trace_id,
            agent_id=event.agent_id,
            tenant_id=event.tenant_id,
            aggregate_type=event.aggregate_type,
            aggregate_id=event.aggregate_id,
            sequence=sequence,
            payload=event.payload,
        )
        await conn.execute(
            _INSERT_EVENT,
            event.event_id,
            event.event_type,
            event.schema_version,
            event.aggregate_type,
            event.aggregate_id,
            sequence,
            event.tenant_id,
            event.agent_id,
            event.trace_id,
            event.occurred_at,
            json.dumps(event.payload),
            OutboxState.OUTBOX_WRITTEN,
            encode_envelope(envelope),
        )
        await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")
        before = time.monotonic()  # the transaction block's exit sends COMMIT
    return before


async def writer_child(args: argparse.Namespace) -> None:
    """`--writer process`: connect, print READY, wait for a start time on stdin, write, print
    the results."""

    async def start_at() -> float:
        print("READY", flush=True)
        return float(await asyncio.to_thread(sys.stdin.readline))

    result = await paced_writer(
        args.database_url,
        args.rate,
        args.seconds,
        args.steady_aggregates,
        args.concurrency,
        start_at,
        args.writer_index,
        args.writers,
        args.writer_path,
    )
    result["commits"] = list(result["commits"].items())
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


async def run_writer_processes(
    args: argparse.Namespace, url: str, lead_s: float = 0.5
) -> dict[str, Any]:
    """`--writers` child processes, writer j taking events j, j+K, j+2K, ..., starting
    `lead_s` after every child is connected; the results and their `start_at`."""
    procs = []
    for j in range(args.writers):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.outbox",
            "--writer-child",
            "--database-url",
            url,
            "--rate",
            str(args.rate),
            "--seconds",
            str(args.seconds),
            "--steady-aggregates",
            str(args.steady_aggregates),
            "--concurrency",
            str(max(1, math.ceil(args.concurrency / args.writers))),
            "--writers",
            str(args.writers),
            "--writer-index",
            str(j),
            "--writer-path",
            args.writer_path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        ready = await asyncio.wait_for(proc.stdout.readline(), 60)
        if ready.strip() != b"READY":
            raise RuntimeError(f"writer child said {ready!r}")
    start_at = time.monotonic() + lead_s
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start_at}\n".encode())
        await proc.stdin.drain()
    merged: dict[str, Any] = {"commits": {}, "errors": [], "late": 0, "start_at": start_at}
    for proc in procs:
        assert proc.stdout is not None
        out = await proc.stdout.read()
        await proc.wait()
        result = json.loads(out)
        merged["commits"].update({e: tuple(t) for e, t in result["commits"]})
        merged["errors"] += result["errors"]
        merged["late"] += result["late"]
    return merged

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
from controlplane.data.outbox.writer import OUTBOX_CHANNEL
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.events.envelope import NewEvent, OutboxState


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
    over 5 ms. `path` `uow`: through the UnitOfWork; `sql`: the same writes in one statement
    on asyncpg (see `sql_commit`)."""
    engine = create_engine(url, pool_size=concurrency // 2 + 1)
    # A connection per slot, not an asyncpg pool (whose release sends a reset: one round
    # trip more per event).
    idle: list[asyncpg.Connection] = []
    if path == "sql":
        dsn = asyncpg_dsn(url)
        idle = list(await asyncio.gather(*(asyncpg.connect(dsn) for _ in range(concurrency))))
    connections = list(idle)
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
                conn = idle.pop()  # one per slot: a slot is held, so one is idle
                try:
                    before = await sql_commit(conn, event)
                finally:
                    idle.append(conn)
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
    for conn in connections:
        await conn.fetchval("SELECT 1")
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
    for conn in connections:
        await conn.close()
    return {"commits": commits, "errors": errors, "late": late}


# One statement, one round trip, committed on its own: the sequence upsert (which holds the
# aggregate's row lock until the commit, as in the UnitOfWork), the outbox row with its
# envelope bytes (the writer's encoding with the sequence spliced in, `_envelope_parts`),
# and the NOTIFY that PostgreSQL delivers at the commit.
_WRITE_EVENT = (
    "WITH seq AS (INSERT INTO aggregate_sequences (aggregate_type, aggregate_id, last_sequence)"
    " VALUES ($4, $5, 1) ON CONFLICT (aggregate_type, aggregate_id)"
    " DO UPDATE SET last_sequence = aggregate_sequences.last_sequence + 1"
    " RETURNING last_sequence),"
    " ev AS (INSERT INTO outbox (event_id, event_type, schema_version, aggregate_type,"
    " aggregate_id, sequence, tenant_id, agent_id, trace_id, traceparent, occurred_at, payload,"
    " state, next_attempt_at, encoded_envelope)"
    " SELECT $1, $2, $3, $4, $5, seq.last_sequence, $6, $7, $8, NULL, $9, $10::jsonb, $11, $9,"
    " convert_to($12 || seq.last_sequence::text || $13, 'UTF8') FROM seq RETURNING 1)"
    f" SELECT pg_notify('{OUTBOX_CHANNEL}', '') FROM ev"
)
_SEQUENCE_MARK = '"sequence":1,"payload":'


def _envelope_parts(event: NewEvent) -> tuple[str, str]:
    """`encode_envelope` of `event`'s envelope, split where its sequence goes."""
    envelope = event.written(1)
    head, mark, tail = encode_envelope(envelope).decode().partition(_SEQUENCE_MARK)
    assert mark, "the envelope's sequence is where _SEQUENCE_MARK says"
    return head + '"sequence":', ',"payload":' + tail


async def sql_commit(conn: asyncpg.Connection, event: NewEvent) -> float:
    """Write `event` as OutboxWriter.add and UnitOfWork.commit do (sequence upsert under the
    aggregate's row lock, outbox row with its encoded envelope, NOTIFY, COMMIT), in one
    prepared statement on asyncpg: a fraction of the UnitOfWork's CPU, so that a 2-core
    machine can offer 1,000 events/s with the relay's share left. Returns the monotonic
    stamp read just before the statement (and its commit) is sent."""
    head, tail = _envelope_parts(event)
    args = (
        event.event_id,
        event.event_type,
        event.schema_version,
        event.aggregate_type,
        event.aggregate_id,
        event.tenant_id,
        event.agent_id,
        event.trace_id,
        event.occurred_at,
        json.dumps(event.payload),
        OutboxState.OUTBOX_WRITTEN,
        head,
        tail,
    )
    before = time.monotonic()
    await conn.execute(_WRITE_EVENT, *args)
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

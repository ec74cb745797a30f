"""Outbox relay benchmark: relay throughput against raw JetStream, and delivery latency.

    set -a; . .services/env; set +a; uv run --frozen python -m bench.outbox [--events N ...]

One run measures, with the same message size on both sides:

1. `raw_publish_per_s`: `js.publish_async` of N messages (the size of a real encoded event
   envelope, the relay's headers, unique `Nats-Msg-Id`s) to a temporary stream, every ack
   awaited; `raw_cpu_us_per_msg` is this process's CPU per message;
2. `relay_per_s`: one in-process Relay draining an outbox pre-filled with N events (1,000
   aggregates, written round-robin before the clock starts) into an empty `AGENTOS_EVENTS`,
   until every row is Published; `ratio = relay_per_s / raw_publish_per_s`, and
   `relay_cpu_us_per_event` / `cpu_ratio` the same in CPU time, which the load of other work
   on the machine moves far less than wall time (PostgreSQL's and nats-server's CPU are not
   in it). `relay.phase_s` splits the drain's wall time between claim / publish / finish;
3. `commit_to_published`: at a steady `--rate` for `--seconds` (after a VACUUM ANALYZE, as
   autovacuum would do after the drain; see `--stale-stats`), `--writers` child processes
   commit one event per transaction at absolute deadlines, the relay (woken by LISTEN/NOTIFY)
   publishes, and a core NATS subscription on `agentos.events.>` records arrivals.
   One clock: both stamps are `time.monotonic()`, CLOCK_MONOTONIC, shared by every process of
   the host. The start stamp is read just before COMMIT is sent, after the INSERTs: no relay
   can see the row before that, so no latency is negative, and the commit's own time is in it
   (as it is in what a caller waits for; `commit_p99_ms` shows that part). A stamp read after
   COMMIT returns is not one moment with the arrival: a writer whose loop resumes late reads
   it after the event has arrived (a run once printed `latency_min_ms: -127.3`). The writers
   run the UnitOfWork's statements on asyncpg (`--writer-path sql`; `uow` goes through the
   UnitOfWork, ~5x the CPU per commit), in processes of their own, as the API's writes would
   be: `achieved_per_s` says what they managed of the `offered_per_s`.

It works in a database of its own (created from AGENTOS_PG_ADMIN_DSN, migrated, dropped at the
end; `--pg private` runs a throwaway cluster instead) and, unless `--nats-url` is given, on a
private nats-server (same binary and flags as `hack/services.sh`), so that deleting
`AGENTOS_EVENTS` cannot disturb tests running against the shared broker, nor they the
benchmark. `--sweep 256x16,512x32` drains again with other (batch_size x per_aggregate);
`--profile cprofile|pyinstrument` profiles the main drain. Goals (reported, never asserted):
ratio >= 0.7; p99 <= 50 ms at 1,000 events/s achieved. Progress and the run's detail go to
stderr; stdout gets one JSON line per figure, each with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import statistics
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import nats
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.outbox_timing import PhaseTimer, start_profiler, stop_profiler
from bench.outbox_writers import (
    asyncpg_dsn,
    bench_event,
    paced_writer,
    run_writer_processes,
    writer_child,
)
from controlplane.bootstrap import Container, schema_registry
from controlplane.config import Settings
from controlplane.data.engine import create_engine
from controlplane.data.outbox.relay_store import RelayStore
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.events.envelope import OutboxState
from controlplane.messaging.relay import RelayConfig, encode
from controlplane.messaging.streams import EVENTS_STREAM, EVENTS_SUBJECT_PREFIX
from controlplane.observability.logging import configure_logging
from harness.nats import PrivateNats
from harness.postgres import PrivatePostgres, create_database, drop_database

GOAL_RATIO = 0.7
GOAL_P99_MS = 50.0
SWEEP_KEYS: tuple[str, ...] = ("batch_size", "per_aggregate", "relay_per_s", "events_per_cycle")
SWEEP_KEYS += ("stalled", "first_error")


def log(message: str) -> None:
    print(f"[bench.outbox] {message}", file=sys.stderr, flush=True)


# -- services ------------------------------------------------------------------------------------


class ShortLogs(logging.Filter):
    """Cut long log values (a failed finish() logs a statement with 30,000 parameters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            record.msg = {
                k: v[:400] + "..." if isinstance(v, str) and len(v) > 400 else v
                for k, v in record.msg.items()
            }
        return True


# -- events --------------------------------------------------------------------------------------


async def prefill(engine: AsyncEngine, events: int, aggregates: int) -> None:
    """`events` events over `aggregates` aggregates, round-robin (event k of every aggregate,
    then event k+1), one transaction per round: ids interleave across aggregates as they do
    when many aggregates change concurrently."""
    registry = schema_registry()
    rounds = math.ceil(events / aggregates)
    written = 0
    for k in range(rounds):
        count = min(aggregates, events - written)
        async with UnitOfWork(engine, registry) as uow:
            await uow.outbox.add_many([bench_event(i, k) for i in range(count)])
            await uow.commit()
        written += count


async def reset_outbox(dsn: str) -> None:
    """Every event back to OutboxWritten (for a second drain on the same rows)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE outbox SET state = $1, stream_sequence = NULL, published_at = NULL,"
            " attempts = 0, last_error = NULL, next_attempt_at = occurred_at",
            OutboxState.OUTBOX_WRITTEN,
        )
        await conn.execute("UPDATE aggregate_sequences SET lease_owner = NULL, lease_until = NULL")
        await vacuum(conn)
    finally:
        await conn.close()


async def vacuum(conn: asyncpg.Connection) -> None:
    await conn.execute("VACUUM ANALYZE outbox")
    await conn.execute("VACUUM ANALYZE aggregate_sequences")


async def count_unpublished(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE state = $1", OutboxState.OUTBOX_WRITTEN
            )
        )
    finally:
        await conn.close()


# -- 1. raw JetStream ----------------------------------------------------------------------------


async def raw_publish(
    nats_url: str, payload: bytes, count: int, event_type: str
) -> tuple[float, float]:
    """Messages per second for `count` publish_async calls with every ack awaited, and this
    process's CPU time per message in microseconds."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:4]
    stream = f"BENCH_RAW_{tag}"  # as long as AGENTOS_EVENTS: same Nats-Expected-Stream size
    prefix = f"bench.raw{tag}"
    await js.add_stream(config=StreamConfig(name=stream, subjects=[f"{prefix}.>"]))
    subject = f"{prefix}.bench-00000.tenant.{event_type}"
    msg_ids = [str(uuid.uuid4()) for _ in range(count)]
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        futures = []
        for msg_id in msg_ids:
            headers = {"Nats-Msg-Id": msg_id, "Agentos-Event-Type": event_type}
            futures.append(await js.publish_async(subject, payload, headers=headers, stream=stream))
        acks = await asyncio.gather(*futures, return_exceptions=True)
        elapsed = time.perf_counter() - started
        cpu_us = (time.process_time() - cpu_started) / count * 1e6
        errors = sum(isinstance(a, BaseException) for a in acks)
        stored = (await js.stream_info(stream)).state.messages
        if errors or stored != count:
            log(f"raw: {errors} failed acks, {stored}/{count} messages stored")
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await nc.close()
    return count / elapsed, cpu_us


# -- 2. relay drain ------------------------------------------------------------------------------


async def drain(
    engine: AsyncEngine,
    url: str,
    dsn: str,
    nats_url: str,
    config: RelayConfig,
    events: int,
    profile: str | None = None,
    profile_out: str | None = None,
    stall_s: float = 20.0,
) -> dict[str, Any]:
    """Time one Relay publishing the whole pre-filled outbox into an empty AGENTOS_EVENTS."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(EVENTS_STREAM)
    relay = Container(Settings(database_url=url), engine=engine).build_relay(
        nc, config, owner="bench-relay"
    )
    await relay.setup()
    timer = PhaseTimer(relay)
    stop = asyncio.Event()
    profiler = start_profiler(profile)
    started, cpu_started = time.perf_counter(), time.process_time()
    task = asyncio.create_task(relay.run(stop))
    # relay.stats["published"] grows after finish() has committed the batch's Published rows.
    # Give up when nothing more is published for `stall_s` (e.g. every finish() failing).
    progress, progress_at, stalled = 0, started, False
    while relay.stats["published"] < events and not task.done():
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        if relay.stats["published"] != progress:
            progress, progress_at = relay.stats["published"], now
        elif now - progress_at > stall_s:
            stalled = True
            break
    elapsed = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    stop_profiler(profiler, profile, profile_out)
    stop.set()
    await task
    stored = (await js.stream_info(EVENTS_STREAM)).state.messages
    await nc.close()
    unpublished = await count_unpublished(dsn)
    result = {
        "batch_size": config.batch_size,
        "per_aggregate": config.per_aggregate,
        "relay_per_s": round(relay.stats["published"] / elapsed, 1),
        "seconds": round(elapsed, 3),
        "cpu_us_per_event": round(cpu_s / max(relay.stats["published"], 1) * 1e6, 1),
        "published": relay.stats["published"],
        "stored": stored,
        "unpublished": unpublished,
        "duplicates": relay.stats["duplicates"],
        "failed": relay.stats["failed"],
        "stalled": stalled,
        **timer.summary(),
    }
    if stored != events or unpublished or stalled:
        log(f"drain incomplete: {json.dumps(result)}")
    return result


# -- 3. steady-rate latency ----------------------------------------------------------------------


async def steady_latency(
    args: argparse.Namespace, url: str, dsn: str, nats_url: str, config: RelayConfig
) -> dict[str, Any]:
    received: dict[str, float] = {}
    missing: set[str] | None = None  # known once the writer has finished
    all_received = asyncio.Event()

    async def on_event(msg: Any) -> None:
        event_id = msg.headers["Nats-Msg-Id"]
        received[event_id] = time.monotonic()
        if missing is not None:
            missing.discard(event_id)
            if not missing:
                all_received.set()

    sub_nc = await nats.connect(nats_url)
    await sub_nc.subscribe(f"{EVENTS_SUBJECT_PREFIX}.>", cb=on_event)
    await sub_nc.flush()

    relay_engine = create_engine(url)
    relay_nc: NATS = await nats.connect(nats_url)
    relay = Container(Settings(database_url=url), engine=relay_engine).build_relay(
        relay_nc, config, owner="bench-steady"
    )
    timer = PhaseTimer(relay)
    stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.5)  # relay set up and listening

    cpu_started = time.process_time()
    if args.writer == "process":
        written = await run_writer_processes(args, url)
        start_at = written["start_at"]
    else:
        start_at = time.monotonic() + 0.2
        written = await paced_writer(
            url,
            args.rate,
            args.seconds,
            args.steady_aggregates,
            args.concurrency,
            start_at,
            path=args.writer_path,
        )
    commits: dict[str, tuple[float, float]] = written["commits"]
    last = max((t for _, t in commits.values()), default=start_at)
    achieved = len(commits) / (last - start_at) if last > start_at else 0.0
    missing = set(commits) - received.keys()
    if missing:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_received.wait(), 10)
    cpu_s = time.process_time() - cpu_started
    stop.set()
    await relay_task
    await relay_nc.close()
    await sub_nc.close()
    await relay_engine.dispose()

    # One clock, one order of events: the start stamp is read just before COMMIT is sent, and
    # no relay can see the row before that, so every latency is >= 0. (A stamp read after
    # COMMIT returns can come after the arrival when the writer's loop resumes late: that is
    # how a run once printed a negative minimum.) The commit's own time is part of it, as it
    # is of what a caller waits for; `commit_p50_ms` / `commit_p99_ms` show that part.
    latencies_ms = sorted((received[e] - t[0]) * 1000 for e, t in commits.items() if e in received)
    if args.timeline:  # one line per event: seconds since the start, latency in ms
        points = sorted((t[0], received[e]) for e, t in commits.items() if e in received)
        lines = (f"{c - start_at:.4f} {(r - c) * 1000:.2f}\n" for c, r in points)
        await asyncio.to_thread(Path(args.timeline).write_text, "".join(lines))
    commit_ms = sorted((t[1] - t[0]) * 1000 for t in commits.values())
    if written["errors"]:
        log(f"writer errors: {len(written['errors'])}, first: {written['errors'][0]}")
    result: dict[str, Any] = {
        "achieved_rate_per_s": round(achieved, 1),
        "committed": len(commits),
        "received": len(latencies_ms),
        "writer_errors": len(written["errors"]),
        "writer_late": written["late"],
        "unpublished_after": await count_unpublished(dsn),
        "relay": timer.summary(),
        # This process: the relay and the measuring subscriber (and, inproc, the writer).
        "process_cpu_us_per_event": round(cpu_s / len(commits) * 1e6, 1) if commits else None,
    }
    if len(latencies_ms) >= 2:
        q = statistics.quantiles(latencies_ms, n=100, method="inclusive")
        result.update(
            latency_p50_ms=round(q[49], 2),
            latency_p90_ms=round(q[89], 2),
            latency_p99_ms=round(q[98], 2),
            latency_max_ms=round(latencies_ms[-1], 2),
            latency_min_ms=round(latencies_ms[0], 2),
        )
        q = statistics.quantiles(commit_ms, n=100, method="inclusive")
        result.update(commit_p50_ms=round(q[49], 2), commit_p99_ms=round(q[98], 2))
    return result


# -- main ----------------------------------------------------------------------------------------


def parse_sweep(text: str) -> list[tuple[int, int]]:
    """`256x32,512x16` → [(256, 32), (512, 16)] (batch_size x per_aggregate)."""
    pairs = []
    for item in filter(None, text.split(",")):
        batch, _, per = item.partition("x")
        pairs.append((int(batch), int(per)))
    return pairs


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Set up (private servers if asked, a new database), run the phases, always clean up."""
    load_start = round(os.getloadavg()[0], 2)
    private_pg = private_nats = None
    admin_dsn = name = ""
    try:
        if args.pg == "private":
            private_pg = PrivatePostgres()
            private_pg.start()
            admin_dsn, database_url = private_pg.admin_dsn, private_pg.database_url
        else:
            admin_dsn = os.environ.get("AGENTOS_PG_ADMIN_DSN", "")
            database_url = os.environ.get("AGENTOS_DATABASE_URL", "")
        if not admin_dsn or not database_url:
            raise SystemExit(
                "AGENTOS_PG_ADMIN_DSN / AGENTOS_DATABASE_URL unset: load .services/env"
            )
        nats_url = args.nats_url
        if not nats_url:
            private_nats = PrivateNats()
            private_nats.start()
            nats_url = private_nats.url
        name, url = await create_database(admin_dsn, database_url, "agentos_bench_outbox")
        log(f"database {name}; nats {'private ' if private_nats else ''}{nats_url}")
        result = await phases(args, url, nats_url)
    finally:
        try:
            if name and not args.keep_db:
                await drop_database(admin_dsn, name)
        finally:
            if private_nats:
                private_nats.stop()
            if private_pg:
                private_pg.stop()
    result.update(
        nats="private" if private_nats else "given",
        pg=args.pg,
        cpus=os.cpu_count(),
        loadavg_1m={"start": load_start, "end": round(os.getloadavg()[0], 2)},
    )
    return result


async def phases(args: argparse.Namespace, url: str, nats_url: str) -> dict[str, Any]:
    """Pre-fill, raw publish, (sweep,) drain, steady latency; the result line."""
    dsn = asyncpg_dsn(url)
    engine = create_engine(url)
    base = replace(
        RelayConfig(),
        batch_size=args.batch_size,
        per_aggregate=args.per_aggregate,
        cycles_in_flight=args.cycles_in_flight,
    )
    try:
        started = time.perf_counter()
        await prefill(engine, args.events, args.aggregates)
        conn = await asyncpg.connect(dsn)
        await vacuum(conn)
        await conn.close()
        log(f"pre-filled {args.events} events in {time.perf_counter() - started:.1f}s (untimed)")

        sample = (await RelayStore(engine).pending([("tenant", "bench-00000")], 1))[0]
        payload = encode(sample)
        log(f"payload {len(payload)} bytes")

        raw, raw_cpu_us = await raw_publish(nats_url, payload, args.events, sample.event_type)
        log(f"raw publish_async: {raw:,.0f} msg/s, {raw_cpu_us:.1f} us CPU per message")

        sweep = []
        for batch, per in parse_sweep(args.sweep):
            config = replace(base, batch_size=batch, per_aggregate=per)
            result = await drain(engine, url, dsn, nats_url, config, args.events)
            log(f"sweep {batch}x{per}: {json.dumps(result)}")
            sweep.append(result)
            await reset_outbox(dsn)

        main = await drain(
            engine, url, dsn, nats_url, base, args.events, args.profile, args.profile_out
        )
        log(f"relay drain: {json.dumps(main)}")

        if not args.stale_stats:
            # As autovacuum would within a minute: after the drain flipped 50,000 rows to
            # Published, the statistics still say "all OutboxWritten" and claim() then scans
            # the outbox in id order (pk_outbox) past every published row, on every cycle.
            conn = await asyncpg.connect(dsn)
            await vacuum(conn)
            await conn.close()
        steady = await steady_latency(args, url, dsn, nats_url, base)
        log(f"steady: {json.dumps(steady)}")
    finally:
        await engine.dispose()

    relay_per_s = main["relay_per_s"] if not main["stalled"] else 0.0
    ratio = relay_per_s / raw if raw else 0.0
    p99 = steady.get("latency_p99_ms")
    return {
        "bench": "outbox",
        "raw_publish_per_s": round(raw, 1),
        "raw_cpu_us_per_msg": round(raw_cpu_us, 1),
        "relay_cpu_us_per_event": main["cpu_us_per_event"],
        "relay_per_s": relay_per_s,
        "ratio": round(ratio, 3),
        "latency_p50_ms": steady.get("latency_p50_ms"),
        "latency_p99_ms": p99,
        "events": args.events,
        "payload_bytes": len(payload),
        "steady_rate_per_s": args.rate,
        "achieved_rate_per_s": steady["achieved_rate_per_s"],
        "steady_received": steady["received"],
        "steady_committed": steady["committed"],
        "latency_max_ms": steady.get("latency_max_ms"),
        "latency_min_ms": steady.get("latency_min_ms"),
        "commit_p99_ms": steady.get("commit_p99_ms"),
        "relay": {k: v for k, v in main.items() if k != "relay_per_s"},
        "steady_relay": steady["relay"],
        "steady_process_cpu_us_per_event": steady["process_cpu_us_per_event"],
        "sweep": [{k: r[k] for k in SWEEP_KEYS} for r in sweep],
        "writer": (args.writer if args.writer == "inproc" else f"{args.writers} processes")
        + f", {args.writer_path}",
        "stale_stats": args.stale_stats,
        "goal_ratio_met": ratio >= GOAL_RATIO,
        "goal_p99_met": p99 is not None and p99 <= GOAL_P99_MS,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.outbox", description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=30_000, help="events to drain (and raw msgs)")
    p.add_argument("--aggregates", type=int, default=1_000, help="aggregates of the pre-fill")
    p.add_argument("--rate", type=float, default=1_000.0, help="steady writer rate, events/s")
    p.add_argument("--seconds", type=float, default=10.0, help="steady phase duration")
    p.add_argument("--steady-aggregates", type=int, default=1_000)
    p.add_argument(
        "--concurrency", type=int, default=32, help="in-flight commits of all writers together"
    )
    p.add_argument("--writer", choices=("process", "inproc"), default="process")
    p.add_argument("--writers", type=int, default=3, help="writer processes (--writer process)")
    p.add_argument(
        "--writer-path",
        choices=("sql", "uow"),
        default="sql",
        help="sql: the UnitOfWork's statements on asyncpg (cheap); uow: the UnitOfWork",
    )
    p.add_argument("--writer-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=RelayConfig.batch_size)
    p.add_argument("--per-aggregate", type=int, default=RelayConfig.per_aggregate)
    p.add_argument("--cycles-in-flight", type=int, default=RelayConfig.cycles_in_flight)
    p.add_argument("--sweep", default="", help="extra drains first, e.g. 256x32,512x16")
    p.add_argument("--nats-url", default=None, help="use this server (default: a private one)")
    p.add_argument(
        "--pg",
        choices=("shared", "private"),
        default="shared",
        help="shared: a new database on AGENTOS_PG_ADMIN_DSN; private: a throwaway cluster",
    )
    p.add_argument("--profile", choices=("cprofile", "pyinstrument"), default=None)
    p.add_argument("--profile-out", default=None, help="file for the drain's profile")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--timeline", default=None, help="file for each steady event's latency")
    p.add_argument(
        "--stale-stats",
        action="store_true",
        help="skip VACUUM ANALYZE between the drain and the steady phase",
    )
    p.add_argument("--writer-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--database-url", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging("warning", fmt="console")
    for handler in logging.getLogger().handlers:
        handler.addFilter(ShortLogs())
    if args.writer_child:
        asyncio.run(writer_child(args))
        return
    result = asyncio.run(bench(args))
    log(f"detail: {json.dumps(result)}")
    for line in figure_lines(result):
        print(json.dumps(line), flush=True)


def figure_lines(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per figure, each with the run's conditions (load average, cores)."""
    conditions = {"cpus": r["cpus"], "loadavg_1m": r["loadavg_1m"], "pg": r["pg"]}
    return [
        {
            "bench": "outbox",
            "figure": "relay_vs_raw_publish_async",
            "relay_per_s": r["relay_per_s"],
            "raw_publish_per_s": r["raw_publish_per_s"],
            "ratio": r["ratio"],
            # Load-proof: this process's CPU per message (PostgreSQL's and NATS's not included).
            "relay_cpu_us_per_event": r["relay_cpu_us_per_event"],
            "raw_cpu_us_per_msg": r["raw_cpu_us_per_msg"],
            "cpu_ratio": round(r["raw_cpu_us_per_msg"] / r["relay_cpu_us_per_event"], 3)
            if r["relay_cpu_us_per_event"]
            else None,
            "goal_ratio": GOAL_RATIO,
            "goal_met": r["goal_ratio_met"],
            "events": r["events"],
            "payload_bytes": r["payload_bytes"],
            **conditions,
        },
        {
            "bench": "outbox",
            "figure": "commit_to_published",
            "offered_per_s": r["steady_rate_per_s"],
            "achieved_per_s": r["achieved_rate_per_s"],
            "p50_ms": r["latency_p50_ms"],
            "p99_ms": r["latency_p99_ms"],
            "max_ms": r["latency_max_ms"],
            "min_ms": r["latency_min_ms"],
            "commit_p99_ms": r["commit_p99_ms"],
            "relay_process_cpu_us_per_event": r["steady_process_cpu_us_per_event"],
            "received": r["steady_received"],
            "committed": r["steady_committed"],
            "writer": r["writer"],
            "goal_p99_ms": GOAL_P99_MS,
            "goal_met": r["goal_p99_met"],
            **conditions,
        },
    ]


if __name__ == "__main__":
    main()

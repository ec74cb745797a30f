"""Runs benchmark: dispatch latency, throughput and crash recovery of the run plane.

    set -a; . .services/env; set +a; uv run --frozen python -m bench.runs [--runs N ...]

Against a scratch database (from AGENTOS_PG_ADMIN_DSN, migrated, dropped at the end) and a
private nats-server (harness.nats.PrivateNats), with `agentos serve` in its own process
(AGENTOS_RUNTIME=process, rate limit off, log level warning) and the SDK agent
bench/agents/run_agent.py in process sandboxes. Runs flow as architecture/runs.md says: REST create
→ outbox → relay → JetStream AGENTOS_RUNS → the gateway's runs:next long poll → the handler.
One JSON line per figure on stdout; progress on stderr. Goals are reported, never asserted.

1. `dispatch_latency`: `--latency-runs` sequential runs to one agent (concurrency 1), each
   from just before its POST to its handler's first line. Both ends read CLOCK_REALTIME
   (`time.time_ns`; the handler sends its stamp by UDP), one clock for every process of the
   machine. The cumulative `breakdown_p50_ms` says when the API answered 201, when the relay
   marked the dispatch event Published (outbox.published_at), when the gateway's claim moved
   the run to Running (status.startedAt) and when the handler started. Beside it, in the same
   run and on the same nats-server: a raw JetStream publish → pull-consume (`fetch(1)`
   already waiting) round trip. Goal p50 <= 15 ms, p99 <= 50 ms.
2. `throughput`: `--agents` agents of `spec.runs.concurrency` `--concurrency`, `--runs` runs
   (or as many as `--submit-seconds` allow) spread round-robin by an asyncio httpx load
   generator, each run 3 recorded `run.step` steps and a result; runs/s from the first
   create to the last Succeeded (status.finishedAt, read from the database), and CPU seconds
   per run of serve (/proc/<pid>/stat), the agents, nats-server, the load generator and the
   whole machine (/proc/stat) over the same window. Goal >= 300 runs/s.
3. `recovery`: `--kills` times, kill -9 of an agent's sandbox while its handler waits
   mid-run, then the time until the run is Running again on attempt 2 (polled through the
   API) and until the handler of attempt 2 starts (its stamp), with the restart backoff and
   the ack wait in force.

`--py-spy PATH` (a py-spy binary, e.g. from a temporary venv) samples serve during the
throughput phase and prints its hottest frames to stderr (and the raw stacks to a file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.js.api import ConsumerConfig, StreamConfig
from sqlalchemy.engine import make_url

from bench.runs_plane import AGENT_SCRIPT, TENANT, Plane, Stamps
from bench.runs_profile import CpuWindow, start_py_spy, stop_py_spy
from harness.nats import PrivateNats
from harness.postgres import create_database, drop_database
from harness.serve import ServeProcess
from harness.stats import percentile

TERMINAL = ("Succeeded", "Failed", "Canceled", "TimedOut")
GOAL_P50_MS, GOAL_P99_MS, GOAL_RUNS_PER_S = 15.0, 50.0, 300.0


def log(message: str) -> None:
    print(f"[bench.runs] {message}", file=sys.stderr, flush=True)


def ms(ns: int | float) -> float:
    return round(ns / 1e6, 2)


def p50_p99(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    return {"p50": round(percentile(values, 50), 2), "p99": round(percentile(values, 99), 2)}


def ns_of(timestamp: str | datetime | None) -> int | None:
    """An RFC 3339 string or an aware datetime as ns since the epoch."""
    if timestamp is None:
        return None
    moment = (
        timestamp
        if isinstance(timestamp, datetime)
        else datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    )
    return int(moment.timestamp() * 1_000_000) * 1000


# -- 1. dispatch latency -------------------------------------------------------------------------


async def raw_jetstream(nats_url: str, count: int) -> list[float]:
    """Publish-start → received (ms) of `count` messages, one at a time, each to a durable
    pull consumer whose `fetch(1)` is already waiting."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    tag = os.urandom(3).hex()
    stream, subject = f"BENCH_RTT_{tag}", f"bench.rtt{tag}.one"
    await js.add_stream(config=StreamConfig(name=stream, subjects=[f"bench.rtt{tag}.>"]))
    psub = await js.pull_subscribe(
        subject, durable="rtt", stream=stream, config=ConsumerConfig(ack_wait=30)
    )

    async def receive() -> int:
        msgs = await psub.fetch(1, timeout=10)
        received = time.time_ns()
        await msgs[0].ack()
        return received

    latencies: list[float] = []
    try:
        for i in range(count + 10):
            waiting = asyncio.create_task(receive())
            await asyncio.sleep(0.002)  # the pull request reaches the server first
            started = time.time_ns()
            await js.publish(subject, b"x" * 256, headers={"Nats-Msg-Id": f"{tag}-{i}"})
            received = await waiting
            if i >= 10:  # warm-up
                latencies.append((received - started) / 1e6)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await nc.close()
    return latencies


async def breakdown(plane: Plane, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """p50 of each moment of a run's dispatch, ms after its POST started."""
    rows = await plane.query(
        "SELECT r.name, r.status->>'startedAt' AS started, o.published_at"
        " FROM runs r JOIN outbox o ON o.event_id = r.dispatch_event_id"
        " WHERE r.tenant = $1 AND r.name = ANY($2::text[])",
        TENANT,
        [s["run"] for s in samples],
    )
    by_name = {row["name"]: row for row in rows}
    moments: dict[str, list[float]] = {"api_201": [], "published": [], "claimed": []}
    for s in samples:
        moments["api_201"].append((s["answered"] - s["started"]) / 1e6)
        row = by_name.get(s["run"])
        if row is None:
            continue
        for key, value in (("published", row["published_at"]), ("claimed", row["started"])):
            stamp = ns_of(value)
            if stamp is not None:
                moments[key].append((stamp - s["started"]) / 1e6)
    moments["handler"] = [s["latency_ms"] for s in samples]
    return {key: p50_p99(values)["p50"] for key, values in moments.items()}


async def dispatch_latency(plane: Plane, nats_url: str, count: int) -> dict[str, Any]:
    await plane.apply_agent("latency", concurrency=1, maxQueued=10)
    await plane.wait_ready(["latency"], 120)
    samples: list[dict[str, Any]] = []
    succeeded = lambda s: s["phase"] in TERMINAL  # noqa: E731
    for i in range(count + 10):
        run, started, answered = await plane.submit("latency", {"mode": "quick", "i": i})
        handler = await plane.stamps.wait(run, 1, 30)
        status = await plane.wait_run(run, succeeded, 30, 0.005)
        if status["phase"] != "Succeeded":
            raise RuntimeError(f"latency run {run} ended {status['phase']}: {status}")
        await asyncio.sleep(0.02)  # the SDK back in its runs:next long poll
        if i >= 10:  # warm-up: connections, caches, the consumer's first pulls
            sample = {"run": run, "started": started, "answered": answered}
            samples.append(sample | {"latency_ms": (handler - started) / 1e6})
    latencies = [s["latency_ms"] for s in samples]
    raw = await raw_jetstream(nats_url, count)
    p, rawp = p50_p99(latencies), p50_p99(raw)
    return {
        "figure": "dispatch_latency",
        "p50_ms": p["p50"],
        "p99_ms": p["p99"],
        "max_ms": round(max(latencies), 2),
        "raw_jetstream_p50_ms": rawp["p50"],
        "raw_jetstream_p99_ms": rawp["p99"],
        "api_create_p50_ms": p50_p99([(s["answered"] - s["started"]) / 1e6 for s in samples])[
            "p50"
        ],
        "breakdown_p50_ms": await breakdown(plane, samples),
        "runs": len(samples),
        "warmup_runs": 10,
        "agents": 1,
        "concurrency": 1,
        "idle_between_runs_ms": 20,
        "goal_p50_met": p["p50"] is not None and p["p50"] <= GOAL_P50_MS,
        "goal_p99_met": p["p99"] is not None and p["p99"] <= GOAL_P99_MS,
    }


# -- 2. throughput -------------------------------------------------------------------------------


async def submit_all(
    plane: Plane, agents: list[str], runs: int, seconds: float, in_flight: int
) -> tuple[list[int], list[str]]:
    """Create up to `runs` runs round-robin over `agents`, `in_flight` POSTs at a time, for
    at most `seconds`; returns (create latencies in ns, errors)."""
    latencies: list[int] = []
    errors: list[str] = []
    counter = iter(range(runs))
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        for i in counter:
            if time.monotonic() > deadline:
                return
            try:
                _, started, answered = await plane.submit(
                    agents[i % len(agents)], {"mode": "steps", "steps": 3}
                )
                latencies.append(answered - started)
            except (RuntimeError, httpx.HTTPError) as exc:
                errors.append(str(exc)[:200])

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies, errors


async def count_phases(plane: Plane) -> dict[str, int]:
    rows = await plane.query(
        "SELECT phase, count(*) AS n FROM runs WHERE tenant = $1 AND agent LIKE 'tp-%'"
        " GROUP BY phase",
        TENANT,
    )
    return {row["phase"]: int(row["n"]) for row in rows}


async def throughput(plane: Plane, args: argparse.Namespace, nats_pid: int) -> dict[str, Any]:
    agents = [f"tp-{i:02d}" for i in range(args.agents)]
    for name in agents:
        await plane.apply_agent(name, concurrency=args.concurrency, maxQueued=100_000)
    await plane.wait_ready(agents, 300)
    pids = [plane.serve.sandbox_pid((await plane.agent(a))["status"]["sandboxID"]) for a in agents]
    log(f"{len(agents)} agents Ready; submitting up to {args.runs} runs")
    cpu = CpuWindow(plane.serve, pids, nats_pid)
    profiler = start_py_spy(args.py_spy, plane.serve, args.submit_seconds + 30)
    cpu.start()
    first = time.time_ns()
    creates, errors = await submit_all(
        plane, agents, args.runs, args.submit_seconds, args.in_flight
    )
    submitted_s = (time.time_ns() - first) / 1e9
    submitted = len(creates)
    log(f"{submitted} runs created in {submitted_s:.1f}s ({len(errors)} errors); waiting")
    deadline = time.monotonic() + args.drain_seconds
    phases = await count_phases(plane)
    while sum(phases.get(p, 0) for p in TERMINAL) < submitted and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        phases = await count_phases(plane)
    used = cpu.stop()
    stop_py_spy(profiler)
    rows = await plane.query(
        "SELECT max(status->>'finishedAt') AS last FROM runs"
        " WHERE tenant = $1 AND agent LIKE 'tp-%' AND phase = 'Succeeded'",
        TENANT,
    )
    last = ns_of(rows[0]["last"]) or time.time_ns()
    succeeded = phases.get("Succeeded", 0)
    elapsed_s = (last - first) / 1e9
    per_run = {
        f"{k}_cpu_ms_per_run": round(v * 1000 / max(succeeded, 1), 3) for k, v in used.items()
    }
    create = p50_p99([c / 1e6 for c in creates])
    return {
        "figure": "throughput",
        "runs_per_s": round(succeeded / elapsed_s, 1) if elapsed_s > 0 else None,
        "succeeded": succeeded,
        "submitted": submitted,
        "phases": phases,
        "create_errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(elapsed_s, 2),
        "create_rate_per_s": round(submitted / submitted_s, 1) if submitted_s else None,
        "create_p50_ms": create["p50"],
        "create_p99_ms": create["p99"],
        **per_run,
        "cpu_s": {k: round(v, 2) for k, v in used.items()},
        "machine_cpu_busy_pct": round(
            100 * used["machine"] / (elapsed_s * (os.cpu_count() or 1)), 1
        )
        if elapsed_s > 0
        else None,
        "agents": args.agents,
        "concurrency": args.concurrency,
        "steps_per_run": 3,
        "load_generator": f"asyncio httpx in the benchmark process, {args.in_flight} in flight",
        "goal_met": elapsed_s > 0 and succeeded / elapsed_s >= GOAL_RUNS_PER_S,
    }


# -- 3. recovery ---------------------------------------------------------------------------------


async def one_recovery(plane: Plane, agent: str) -> dict[str, Any]:
    """Kill -9 `agent`'s sandbox while its handler waits, time the run's second attempt."""
    before = (await plane.agent(agent))["status"]
    run, _, _ = await plane.submit(agent, {"mode": "hold"})
    marker = plane.markers / f"{run}.waiting"
    deadline = time.monotonic() + 60
    # The marker holds the handler's pid once written whole (an empty file is mid-write).
    while not (marker.exists() and marker.read_text().strip()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run} never reached its wait point")
        await asyncio.sleep(0.02)
    pid = int(marker.read_text())
    if pid != plane.serve.sandbox_pid(before["sandboxID"]):
        raise RuntimeError(f"the handler's pid {pid} is not the sandbox's")
    killed = time.time_ns()
    os.kill(pid, signal.SIGKILL)
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while not {"running_again", "agent_ready_again"} <= seen.keys() and time.monotonic() < deadline:
        status = await plane.run_status(run)
        phase = (await plane.agent(agent))["status"].get("phase")
        now = time.time_ns()
        if phase != "Ready":
            seen.setdefault("agent_not_ready", now)
        elif "agent_not_ready" in seen:
            seen.setdefault("agent_ready_again", now)
        if status.get("attempt") == 2 and status["phase"] in ("Running", *TERMINAL):
            seen.setdefault("running_again", now)
        await asyncio.sleep(0.02)
    handler = await plane.stamps.wait(run, 2, 30)
    final = await plane.wait_run(run, lambda s: s["phase"] in TERMINAL, 60, 0.05)
    after = (await plane.agent(agent))["status"]
    return {
        "run_running_again_ms": ms(seen["running_again"] - killed)
        if "running_again" in seen
        else None,
        "handler_attempt2_ms": ms(handler - killed),
        "agent_not_ready_ms": ms(seen["agent_not_ready"] - killed)
        if "agent_not_ready" in seen
        else None,
        "agent_ready_again_ms": ms(seen["agent_ready_again"] - killed)
        if "agent_ready_again" in seen
        else None,
        "final_phase": final["phase"],
        "final_attempt": final.get("attempt"),
        "restart_count_before": before.get("restartCount"),
        "restart_count_after": after.get("restartCount"),
    }


async def recovery(plane: Plane, kills: int, settings: dict[str, str]) -> dict[str, Any]:
    agents = [f"rec-{i}" for i in range(kills)]
    for name in agents:
        await plane.apply_agent(name, concurrency=1, maxAttempts=3)
    await plane.wait_ready(agents, 120)
    trials = []
    for name in agents:
        trials.append(await one_recovery(plane, name))
        log(f"recovery {name}: {json.dumps(trials[-1])}")
    again = [t["run_running_again_ms"] for t in trials if t["run_running_again_ms"] is not None]
    handler = [t["handler_attempt2_ms"] for t in trials]
    return {
        "figure": "recovery",
        "running_again_p50_ms": p50_p99(again)["p50"],
        "running_again_max_ms": max(again) if again else None,
        "handler_attempt2_p50_ms": p50_p99(handler)["p50"],
        "kills": kills,
        "trials": trials,
        "restart_backoff_base_s": float(settings["AGENTOS_RESTART_BACKOFF_BASE_S"]),
        "run_ack_wait_s": float(settings["AGENTOS_RUN_ACK_WAIT_S"]),
        "readiness_period_s": 1,
        "poll_interval_ms": 20,
        "note": "each kill on a fresh agent: a first restart, backoff = base",
    }


# -- main ----------------------------------------------------------------------------------------


def serve_settings(args: argparse.Namespace) -> dict[str, str]:
    return {
        "AGENTOS_RUNTIME": "process",
        "AGENTOS_RATE_LIMIT_PER_S": "0",
        "AGENTOS_LOG_LEVEL": "warning",
        "AGENTOS_LOG_FORMAT": "json",
        "AGENTOS_RUN_ACK_WAIT_S": str(args.ack_wait_s),
        "AGENTOS_RESTART_BACKOFF_BASE_S": str(args.restart_backoff_s),
    }


async def phases(
    plane: Plane, args: argparse.Namespace, nats: PrivateNats, settings: dict[str, str]
) -> None:
    """The figures asked for, each printed as soon as it is known."""
    assert nats.proc is not None
    conditions = {"cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}
    if "latency" in args.figures:
        figure = await dispatch_latency(plane, nats.url, args.latency_runs)
        print(json.dumps(figure | conditions), flush=True)
    if "throughput" in args.figures:
        figure = await throughput(plane, args, nats.proc.pid)
        print(json.dumps(figure | conditions), flush=True)
    if "recovery" in args.figures:
        figure = await recovery(plane, args.kills, settings)
        print(json.dumps(figure | conditions), flush=True)


async def bench(args: argparse.Namespace) -> None:
    """Set up (private nats-server, scratch database, serve), run the phases, always clean
    up: serve, the sandboxes it left, the database, nats-server, the temporary folder."""
    admin_dsn = os.environ.get("AGENTOS_PG_ADMIN_DSN", "")
    database_url = os.environ.get("AGENTOS_DATABASE_URL", "")
    if not admin_dsn or not database_url:
        raise SystemExit("AGENTOS_PG_ADMIN_DSN / AGENTOS_DATABASE_URL unset: load .services/env")
    tmp = Path(tempfile.mkdtemp(prefix="agentos-bench-runs-"))
    private = PrivateNats()
    serve: ServeProcess | None = None
    name = ""
    transport: asyncio.DatagramTransport | None = None
    try:
        private.start()
        name, url = await create_database(admin_dsn, database_url, "agentos_bench_runs")
        log(f"database {name}; nats {private.url}; state {tmp}")
        settings = serve_settings(args)
        serve = ServeProcess(tmp, url, private.url, settings)
        await asyncio.to_thread(serve.create_token)
        await asyncio.to_thread(serve.start)
        stamps = Stamps()
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: stamps, local_addr=("127.0.0.1", 0)
        )
        port = int(transport.get_extra_info("sockname")[1])
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        plane = Plane(serve, dsn, stamps, port)
        try:
            await phases(plane, args, private, settings)
        finally:
            await plane.http.aclose()
    except BaseException:
        if serve is not None:
            log(f"serve log tail:\n{serve.log_tail(3000)}")
        raise
    finally:
        await cleanup(serve, transport, admin_dsn, name, private, tmp, args.keep)


async def cleanup(
    serve: ServeProcess | None,
    transport: asyncio.DatagramTransport | None,
    admin_dsn: str,
    name: str,
    private: PrivateNats,
    tmp: Path,
    keep: bool,
) -> None:
    if transport is not None:
        transport.close()
    try:
        if serve is not None:
            await asyncio.to_thread(serve.stop)
            killed = await asyncio.to_thread(serve.kill_sandboxes, str(AGENT_SCRIPT))
            log(f"serve stopped; {killed} sandboxes killed")
        if name:
            await drop_database(admin_dsn, name)
    finally:
        private.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.runs", description=__doc__.split("\n")[0])
    p.add_argument("--figures", default="latency,throughput,recovery")
    p.add_argument("--latency-runs", type=int, default=300)
    p.add_argument("--agents", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=4, help="spec.runs.concurrency")
    p.add_argument("--runs", type=int, default=3000, help="throughput runs at most")
    p.add_argument("--submit-seconds", type=float, default=60.0, help="submission time at most")
    p.add_argument("--drain-seconds", type=float, default=180.0, help="wait for the last runs")
    p.add_argument("--in-flight", type=int, default=16, help="concurrent creates")
    p.add_argument("--kills", type=int, default=3, help="recovery trials")
    p.add_argument("--ack-wait-s", type=float, default=30.0, help="AGENTOS_RUN_ACK_WAIT_S")
    p.add_argument("--restart-backoff-s", type=float, default=1.0, help="restart backoff base")
    p.add_argument("--py-spy", default=None, help="a py-spy binary: profile serve (throughput)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()

"""The runs benchmark's agent (bench/runs.py), on the SDK, in a process sandbox.

Every handler first sends one UDP datagram `start <run> <attempt> <time.time_ns()>` to
127.0.0.1:$BENCH_STAMP_PORT (CLOCK_REALTIME, the clock the benchmark reads too), then by
its input {"mode": ...}:
- "steps" (with "steps": N, default 3): N recorded `run.step` custom steps, then a result;
- "hold": on attempt 1 writes $BENCH_MARKER_DIR/<run>.waiting (its pid) and waits there
  (the benchmark kills the sandbox); a later attempt returns at once;
- anything else: returns at once.
Readiness: it touches $AGENTOS_HEARTBEAT_FILE while it serves.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

from agentos_sdk import Agent, Run

STAMPS = ("127.0.0.1", int(os.environ["BENCH_STAMP_PORT"]))
MARKERS = Path(os.environ["BENCH_MARKER_DIR"])
_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
agent = Agent(heartbeat_file_seconds=0.5)


async def work(i: int) -> dict[str, int]:
    return {"i": i}


@agent.run
async def handle(run: Run) -> Any:
    started = time.time_ns()
    _sock.sendto(f"start {run.name} {run.attempt} {started}".encode(), STAMPS)
    spec = run.input if isinstance(run.input, dict) else {}
    mode = spec.get("mode")
    if mode == "steps":
        steps = int(spec.get("steps", 3))
        for i in range(steps):
            await run.step("work", work, i)
        return {"steps": steps}
    if mode == "hold" and run.attempt == 1:
        (MARKERS / f"{run.name}.waiting").write_text(str(os.getpid()))
        await asyncio.sleep(3600)
    return {"attempt": run.attempt}


if __name__ == "__main__":
    agent.serve()

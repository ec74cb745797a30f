"""A test agent on the SDK whose every side effect is counted in files, so tests prove
"exactly once" by counting (tests/e2e/test_runs.py).

Run input: {"steps": N, "gate": PATH?, "gate_after": K?, "sleep": S?, "raise": bool?}
- each step k (1..N) is the tool `effect`, which appends "<run> <k> <attempt>" to
  $COUNT_DIR/effects.log, then a checkpoint {"done": k};
- with "gate": on attempt 1, after step `gate_after` the handler writes
  $COUNT_DIR/<run>.waiting and waits for the gate file (the test kills the sandbox there);
- "sleep": the handler then sleeps S seconds; a cancellation writes $COUNT_DIR/<run>.cancelled;
- "raise": the handler then raises (a poison run);
- $COUNT_DIR/spans.log gets "<run> start|end <monotonic ns>" around each handler.
Readiness: the SDK touches $AGENTOS_HEARTBEAT_FILE while it serves.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from agentos_sdk import Agent, Run

COUNTS = Path(os.environ["COUNT_DIR"])
agent = Agent(heartbeat_file_seconds=0.2)  # well inside the 1 s readiness period


def _append(name: str, line: str) -> None:
    with open(COUNTS / name, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@agent.tool()
def effect(run: str, step: int, attempt: int) -> str:
    """A real side effect: one line per execution."""
    _append("effects.log", f"{run} {step} {attempt}")
    return f"step {step} done"


@agent.run
async def handle(run: Run) -> Any:
    spec = run.input if isinstance(run.input, dict) else {}
    _append("spans.log", f"{run.name} start {time.monotonic_ns()}")
    try:
        done = (run.state or {}).get("done", 0)
        for k in range(1, int(spec.get("steps", 3)) + 1):
            await run.call_tool("effect", run=run.name, step=k, attempt=run.attempt)
            if k > done:
                await run.checkpoint({"done": k})
            if spec.get("gate") and run.attempt == 1 and k == spec.get("gate_after"):
                (COUNTS / f"{run.name}.waiting").write_text(str(os.getpid()))
                while not Path(spec["gate"]).exists():
                    await asyncio.sleep(0.05)
        if spec.get("sleep"):
            await asyncio.sleep(float(spec["sleep"]))
        if spec.get("raise"):
            raise RuntimeError("poison run")
        return {"steps": spec.get("steps", 3), "attempt": run.attempt}
    except asyncio.CancelledError:
        (COUNTS / f"{run.name}.cancelled").write_text(run.cancel_reason or "")
        raise
    finally:
        _append("spans.log", f"{run.name} end {time.monotonic_ns()}")


if __name__ == "__main__":
    agent.serve()

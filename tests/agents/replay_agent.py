"""A test agent on the SDK for replays (tests/e2e/test_replay.py): N tool steps whose
arguments do not name the run, so a replay calls them exactly as its origin did.

Run input: {"steps": N}. Step k calls the tool `effect(step=k, double=...)`, which appends
"<run> <k> <attempt>" to $COUNT_DIR/effects.log and returns k (2k when `double`); the
output is {"total": the sum}. While the file $COUNT_DIR/<agent>.diverge exists the agent is
"changed": step 3 is called with `double=True`.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any

from agentos_sdk import Agent, Run

COUNTS = Path(os.environ["COUNT_DIR"])
agent = Agent(heartbeat_file_seconds=0.2)
_current: contextvars.ContextVar[tuple[str, int]] = contextvars.ContextVar("current_run")


@agent.tool()
def effect(step: int, double: bool = False) -> int:
    """A real side effect: one line per execution, naming the run that executed it."""
    name, attempt = _current.get()
    with open(COUNTS / "effects.log", "a") as f:
        f.write(f"{name} {step} {attempt}\n")
        f.flush()
        os.fsync(f.fileno())
    return step * 2 if double else step


@agent.run
async def handle(run: Run) -> Any:
    _current.set((run.name, run.attempt))
    spec = run.input if isinstance(run.input, dict) else {}
    changed = (COUNTS / f"{run.agent}.diverge").exists()
    total = 0
    for k in range(1, int(spec.get("steps", 5)) + 1):
        total += await run.call_tool("effect", step=k, double=changed and k == 3)
    return {"total": total}


if __name__ == "__main__":
    agent.serve()

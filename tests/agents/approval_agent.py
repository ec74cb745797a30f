"""A test agent on the SDK with a destructive tool, every side effect counted in files
(tests/e2e/test_approvals.py).

Run input: {"before": N?, "path": str, "after": M?, "ask": bool?, "timeout": S?}
- N `effect` steps (appending "<run> <k> <attempt>" to $COUNT_DIR/effects.log), then
- the destructive tool `delete_file(path)`, which appends "<run> <path> <attempt>" to
  $COUNT_DIR/deleted.log (with `spec.runs.approval: destructive` it waits for a human);
  a rejection is caught: the run returns {"rejected": state, "comment": ...};
- with "ask": first `run.request_approval("publish", {"path": path}, timeout)` directly;
- then M more `effect` steps; the output names what was deleted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agentos_sdk import Agent, ApprovalRejected, Run

COUNTS = Path(os.environ["COUNT_DIR"])
agent = Agent(heartbeat_file_seconds=0.2)


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


@agent.tool(destructive=True)
def delete_file(run: str, path: str, attempt: int) -> str:
    """Delete a file (here: record that it would be)."""
    _append("deleted.log", f"{run} {path} {attempt}")
    return f"deleted {path}"


@agent.run
async def handle(run: Run) -> Any:
    spec = run.input if isinstance(run.input, dict) else {}
    timeout = spec.get("timeout")
    if spec.get("ask"):
        decision = await run.request_approval("publish", {"path": spec["path"]}, timeout)
        if not decision.approved:
            return {"rejected": decision.state, "comment": decision.comment}
    for k in range(1, int(spec.get("before", 0)) + 1):
        await run.call_tool("effect", run=run.name, step=k, attempt=run.attempt)
    try:
        # attempt=1: the call must read the same on every attempt (it is approved as is).
        deleted = await run.call_tool("delete_file", run=run.name, path=spec["path"], attempt=1)
    except ApprovalRejected as refused:
        return {"rejected": refused.state, "comment": refused.comment}
    for k in range(1, int(spec.get("after", 0)) + 1):
        step = 100 + k
        await run.call_tool("effect", run=run.name, step=step, attempt=run.attempt)
    return {"deleted": deleted, "attempt": run.attempt}


if __name__ == "__main__":
    agent.serve()

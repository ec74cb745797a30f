"""An example agent that checkpoints through a long run and resumes where it was.

Input: `{"stages": 6, "stage_seconds": 0.5}` (defaults 6 and 0.5; at most 1000 stages).
Each stage is a step with a real side effect: it works for `stage_seconds`, then appends a
line `stage <k> attempt <n>` to the run's counter file `<work dir>/<run>.counter` (the work
dir is `$AGENTOS_WORK_DIR`, else `work/` under the current directory). After each stage the
agent saves `await run.checkpoint({"done": k})`.

When the sandbox dies mid-run, Agent OS delivers the run again (`run.attempt` 2) with the
last checkpoint as `run.state`: the agent starts at stage `done + 1`, and a stage that
completed after that checkpoint returns its recorded output from the journal (the steps are
keyed `stage-<k>`). So every stage runs once: the counter file holds one line per stage.
Cancellation is read between stages (`run.cancelled`) and reaches any await as
asyncio.CancelledError; the agent then stops, and Agent OS ends the run Canceled.

`"crash_after": k` (tests and demos) kills the agent's own process with SIGKILL right after
checkpointing stage k on the first attempt: a crash, as `kill -9` of the sandbox would be.

Output: `{"stages": n, "attempt": a, "resumed_from": d, "ran_now": [k, ...], "lines": n,
"counter": "<run>.counter"}`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from agentos_sdk import Agent, Run

WORK_DIR = "AGENTOS_WORK_DIR"
MAX_STAGES = 1000
log = logging.getLogger("checkpoint-agent")


def work_dir() -> Path:
    """The agent's writable folder: `$AGENTOS_WORK_DIR`, else `work/` under the cwd."""
    return Path(os.environ.get(WORK_DIR) or "work").resolve()


def counter_file(run_name: str) -> Path:
    """The counter file of one run (its name made safe for a file name)."""
    return work_dir() / (re.sub(r"[^A-Za-z0-9_.-]", "_", run_name) + ".counter")


async def do_stage(counter: str, stage: int, attempt: int, seconds: float) -> dict[str, int]:
    """One stage's work: `seconds` of it, then a line appended to the counter file.

    A cancellation during the work leaves no line: the effect happens at the very end."""
    await asyncio.sleep(seconds)
    await asyncio.to_thread(_append, Path(counter), f"stage {stage} attempt {attempt}\n")
    return {"stage": stage, "attempt": attempt}


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(line)


def read_input(payload: Any) -> tuple[int, float, int | None]:
    """(stages, stage_seconds, crash_after) from the run's input. Raises ValueError."""
    payload = payload if isinstance(payload, dict) else {}
    stages = int(payload.get("stages", 6))
    seconds = float(payload.get("stage_seconds", 0.5))
    crash_after = payload.get("crash_after")
    if not 1 <= stages <= MAX_STAGES or not 0 <= seconds <= 3600:
        raise ValueError(f"stages must be 1..{MAX_STAGES} and stage_seconds 0..3600")
    return stages, seconds, None if crash_after is None else int(crash_after)


async def handle(run: Run) -> dict[str, Any]:
    """The run handler: stages from the checkpoint on, a checkpoint after each."""
    stages, seconds, crash_after = read_input(run.input)
    done = int((run.state or {}).get("done", 0))
    counter = counter_file(run.name)
    ran_now: list[int] = []
    log.info("run %s attempt %d: stages %d..%d", run.name, run.attempt, done + 1, stages)
    for stage in range(done + 1, stages + 1):
        if run.cancelled:  # asyncio.CancelledError follows at the next await
            log.info("run %s %s before stage %d", run.name, run.cancel_reason, stage)
            break
        try:
            await run.step(
                "stage", do_stage, str(counter), stage, run.attempt, seconds, key=f"stage-{stage}"
            )
        except asyncio.CancelledError:
            log.info("run %s %s during stage %d", run.name, run.cancel_reason, stage)
            raise
        ran_now.append(stage)
        await run.checkpoint({"done": stage})
        if crash_after == stage and run.attempt == 1:
            log.warning("crash_after=%d: killing this process (SIGKILL)", stage)
            os.kill(os.getpid(), signal.SIGKILL)
    lines = counter.read_text().splitlines() if counter.exists() else []
    return {
        "stages": stages,
        "attempt": run.attempt,
        "resumed_from": done,
        "ran_now": ran_now,
        "lines": len(lines),
        "counter": counter.name,
    }


def build_agent(**settings: Any) -> Agent:
    """The checkpoint agent. `settings` go to `Agent(...)`."""
    agent = Agent(**settings)
    agent.run(handle)
    return agent


if __name__ == "__main__":
    print(f"checkpoint-agent: work directory {work_dir()}", flush=True)
    build_agent().serve()
    sys.exit(0)

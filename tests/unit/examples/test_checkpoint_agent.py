"""examples/agents/checkpoint_agent.py against the FakeGateway: a staged run checkpoints
after each stage and, redelivered, resumes without repeating a stage (the counter file's
lines prove it) — in process, and as a real process killed with SIGKILL mid-run."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.examples.conftest import ROOT, load_example, settings_for
from tests.unit.sdk.conftest import serving
from tests.unit.sdk.fake_gateway import FakeGateway, FakeRun


@pytest.fixture
def example() -> ModuleType:
    return load_example("checkpoint_agent")


def stage_step(stage: int, attempt: int = 1) -> dict[str, Any]:
    """Stage `stage` as the journal holds it once completed."""
    return {
        "callId": f"stage-{stage}",
        "type": "custom",
        "name": "stage",
        "status": "succeeded",
        "input": {},
        "output": {"stage": stage, "attempt": attempt},
        "error": None,
    }


def lines(work_dir: Path, run: FakeRun) -> list[str]:
    return (work_dir / f"{run.name}.counter").read_text().splitlines()


async def test_a_run_does_every_stage_once_and_checkpoints_after_each(
    example: ModuleType, gateway: FakeGateway, work_dir: Path
) -> None:
    run = gateway.submit({"stages": 4, "stage_seconds": 0})
    async with serving(example.build_agent(**settings_for(gateway))):
        await gateway.wait_done(run.name)
    assert run.result == {
        "output": {
            "stages": 4,
            "attempt": 1,
            "resumed_from": 0,
            "ran_now": [1, 2, 3, 4],
            "lines": 4,
            "counter": f"{run.name}.counter",
        }
    }
    assert lines(work_dir, run) == [f"stage {k} attempt 1" for k in (1, 2, 3, 4)]
    assert [c["state"] for c in run.checkpoints] == [{"done": k} for k in (1, 2, 3, 4)]
    assert [c["callId"] for c in run.checkpoints] == [f"stage-{k}" for k in (1, 2, 3, 4)]


@pytest.mark.parametrize("journaled", [2, 3], ids=["at-the-checkpoint", "past-the-checkpoint"])
async def test_a_redelivery_resumes_from_the_checkpoint_without_repeating_stages(
    example: ModuleType, gateway: FakeGateway, work_dir: Path, journaled: int
) -> None:
    # Attempt 1 did `journaled` stages and checkpointed after stage 2, then died.
    run = gateway.submit(
        {"stages": 5, "stage_seconds": 0},
        attempt=2,
        journal=[stage_step(k) for k in range(1, journaled + 1)],
        checkpoint={"state": {"done": 2}, "callId": "stage-2"},
    )
    work_dir.mkdir()
    (work_dir / f"{run.name}.counter").write_text(
        "".join(f"stage {k} attempt 1\n" for k in range(1, journaled + 1))
    )
    async with serving(example.build_agent(**settings_for(gateway))):
        await gateway.wait_done(run.name)
    assert run.result is not None
    output = run.result["output"]
    assert (output["resumed_from"], output["lines"]) == (2, 5)
    assert output["ran_now"] == [3, 4, 5]  # stage 3 past the checkpoint: replayed, not run
    assert lines(work_dir, run) == [
        f"stage {k} attempt {1 if k <= journaled else 2}" for k in range(1, 6)
    ]
    assert [s["callId"] for s in run.steps] == [f"stage-{k}" for k in range(journaled + 1, 6)]


async def test_a_cancellation_between_stages_stops_the_run(
    example: ModuleType, gateway: FakeGateway, work_dir: Path
) -> None:
    run = gateway.submit({"stages": 100, "stage_seconds": 0.05})
    async with serving(example.build_agent(**settings_for(gateway))):
        async with asyncio.timeout(5):
            while len(run.checkpoints) < 2:
                await asyncio.sleep(0.01)
        run.cancel_requested = True
        beats = run.heartbeats
        async with asyncio.timeout(5):
            while run.heartbeats == beats:  # the next heartbeat carries the cancellation
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        done = len(lines(work_dir, run))
        await asyncio.sleep(0.3)
        assert len(lines(work_dir, run)) == done < 100
    assert run.result is None  # the SDK reports nothing after a cancellation
    # Every effect was recorded but, at most, the one of the stage the cancellation cut
    # between its effect and its record (the SDK reports nothing after a cancellation).
    assert done - len(run.steps) in (0, 1)


async def test_a_killed_agent_process_resumes_on_the_next_attempt(
    gateway: FakeGateway, work_dir: Path, tmp_path: Path
) -> None:
    """The example as the process runtime starts it (examples/agents/checkpoint-agent.yaml:
    `python3 examples/agents/checkpoint_agent.py` from the repository root, the SDK found
    through PYTHONPATH=sdk/python, PATH and the sandbox's variables only)."""
    python3 = shutil.which("python3")
    assert python3 is not None
    heartbeat = tmp_path / "heartbeat"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": "sdk/python",
        "AGENTOS_WORK_DIR": str(work_dir),
        "AGENTOS_GATEWAY_URL": gateway.url,
        "AGENTOS_AGENT_TOKEN": gateway.token,
        "AGENTOS_HEARTBEAT_SECONDS": "0.1",
        "AGENTOS_HEARTBEAT_FILE": str(heartbeat),
    }

    async def agent_process() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            python3,
            "examples/agents/checkpoint_agent.py",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    run = gateway.submit({"stages": 4, "stage_seconds": 0.05, "crash_after": 2})
    first = await agent_process()
    assert await asyncio.wait_for(first.wait(), 30) == -signal.SIGKILL
    assert heartbeat.exists()  # the SDK touched the liveness file while serving
    assert lines(work_dir, run) == ["stage 1 attempt 1", "stage 2 attempt 1"]
    gateway.redeliver(run.name)  # as the control plane does once the delivery is lost
    second = await agent_process()
    try:
        await gateway.wait_done(run.name, timeout_s=30)
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 30)
    assert run.result is not None and run.result["output"]["ran_now"] == [3, 4]
    assert lines(work_dir, run) == [
        "stage 1 attempt 1",
        "stage 2 attempt 1",
        "stage 3 attempt 2",
        "stage 4 attempt 2",
    ]

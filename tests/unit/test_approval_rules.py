"""Pure rules of approvals and replays: which steps the policy gates, what an approved
action goes on with, the replay link on the Run object, and how much of an origin is served
(architecture/approvals.md, architecture/replay.md)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controlplane.domain.runs.approvals import (
    Approval,
    ApprovalState,
    needs_approval,
    parse_decision,
)
from controlplane.domain.runs.model import Divergence, ReplayOf, RunRecord, RunSpec, RunStatus
from controlplane.service.approval_gate import split_gate
from controlplane.service.replay import _cutoff

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("policy", "step_type", "destructive", "gated"),
    [
        ("none", "tool", True, False),
        ("destructive", "tool", True, True),
        ("destructive", "tool", False, False),
        ("all", "tool", False, True),
        ("all", "llm", False, False),
        ("all", "custom", True, False),
    ],
)
def test_the_policy_gates_tool_steps_only(
    policy: str, step_type: str, destructive: bool, gated: bool
) -> None:
    assert needs_approval(policy, step_type, destructive) is gated


def test_an_approved_action_goes_on_with_the_details_and_the_edits_laid_over_them() -> None:
    pending = Approval(
        id="a1",
        run_id="r1",
        action="delete_file",
        details={"path": "/a", "force": False},
        state=ApprovalState.PENDING,
        requested_at=NOW,
        run_name="run-1",
        call_id="3",
    )
    decided = pending.decide(
        parse_decision({"decision": "approve", "edits": {"path": "/b"}}), by="ann", at=NOW
    )
    assert decided.arguments == {"path": "/b", "force": False}
    shown = decided.to_object()
    assert (shown["run"], shown["step"], shown["arguments"]) == ("run-1", "3", decided.arguments)
    assert pending.arguments == pending.details


def test_the_gate_fields_are_taken_out_of_a_step_report() -> None:
    body, approval_id, destructive = split_gate(
        {"callId": "1", "approvalId": "a", "destructive": True}
    )
    assert (body, approval_id, destructive) == ({"callId": "1"}, "a", True)


def _record(status: RunStatus) -> RunRecord:
    return RunRecord(
        id="r2", tenant="t", agent_id="u", agent="a", name="run-2", labels={},
        spec=RunSpec(input=None, timeoutSeconds=60), status=status, resource_version=1,
        created_at=NOW,
    )  # fmt: skip


def test_only_a_replay_shows_its_origin_and_divergences() -> None:
    plain = _record(RunStatus()).to_object()["status"]
    assert "replayOf" not in plain and "divergences" not in plain
    link = ReplayOf(name="run-1", uid="r1", mode="recorded", fromStep=3)
    shown = _record(RunStatus(replayOf=link)).to_object()["status"]
    assert shown["replayOf"] == {"name": "run-1", "uid": "r1", "mode": "recorded", "fromStep": 3}
    assert shown["divergences"] == []


def test_a_replay_is_served_the_steps_before_from_step_and_before_its_first_divergence() -> None:
    every = ReplayOf(name="o", uid="o", mode="recorded")
    assert _cutoff(_record(RunStatus(replayOf=every))) is None
    from_3 = ReplayOf(name="o", uid="o", mode="recorded", fromStep=3)
    assert _cutoff(_record(RunStatus(replayOf=from_3))) == 2
    diverged = Divergence(step=2, callId="2", recorded={}, actual={})
    status = RunStatus(replayOf=from_3, divergences=[diverged])
    assert _cutoff(_record(status)) == 1

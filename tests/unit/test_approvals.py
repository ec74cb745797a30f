"""Approvals: pending → approved | rejected | expired, and a decision is final."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any

import pytest

from controlplane.domain.errors import ApprovalDecided, ValidationFailed
from controlplane.domain.runs.approvals import (
    EXPIRY,
    TRANSITIONS,
    Approval,
    ApprovalState,
    check_transition,
    parse_decision,
)

S = ApprovalState
EXPECTED = {(S.PENDING, S.APPROVED), (S.PENDING, S.REJECTED), (S.PENDING, S.EXPIRED)}
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def pending(**fields: Any) -> Approval:
    return Approval(
        id="ap1",
        run_id="r1",
        action="write_file",
        details={"path": "/out.txt"},
        state=S.PENDING,
        requested_at=NOW,
        **fields,
    )


def test_the_table_is_exactly_the_expected_list_of_moves() -> None:
    assert {(src, dst) for src, targets in TRANSITIONS.items() for dst in targets} == EXPECTED
    assert set(TRANSITIONS) == set(ApprovalState)


@pytest.mark.parametrize(("current", "target"), sorted(EXPECTED), ids=str)
def test_a_pending_approval_can_be_decided_or_expire(
    current: ApprovalState, target: ApprovalState
) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [m for m in product(ApprovalState, ApprovalState) if m not in EXPECTED],
    ids=str,
)
def test_every_other_move_is_refused_as_already_decided(
    current: ApprovalState, target: ApprovalState
) -> None:
    with pytest.raises(ApprovalDecided) as refused:
        check_transition(current, target)
    assert refused.value.code == "APPROVAL_DECIDED"


def test_an_approval_records_who_decided_when_with_edits_and_comment() -> None:
    decision = parse_decision({"decision": "approve", "edits": {"path": "/b"}, "comment": "ok"})
    approved = pending().decide(decision, by="user:ana", at=NOW + timedelta(seconds=5))
    assert approved.state is S.APPROVED and approved.is_granted
    assert (approved.decided_by, approved.decided_at) == ("user:ana", NOW + timedelta(seconds=5))
    assert (approved.edits, approved.comment) == ({"path": "/b"}, "ok")


def test_a_rejection_is_not_granted() -> None:
    rejected = pending().decide(parse_decision({"decision": "reject"}), by="user:ana", at=NOW)
    assert rejected.state is S.REJECTED and not rejected.is_granted


@pytest.mark.parametrize("first", ["approve", "reject"])
@pytest.mark.parametrize("second", ["approve", "reject"])
def test_a_decided_approval_cannot_be_decided_again(first: str, second: str) -> None:
    decided = pending().decide(parse_decision({"decision": first}), by="user:ana", at=NOW)
    with pytest.raises(ApprovalDecided):
        decided.decide(parse_decision({"decision": second}), by="user:bo", at=NOW)
    with pytest.raises(ApprovalDecided):
        decided.expire(NOW)


def test_an_expired_approval_is_a_rejection_and_final() -> None:
    expired = pending(expires_at=NOW).expire(NOW)
    assert (expired.state, expired.decided_by, expired.is_granted) == (S.EXPIRED, EXPIRY, False)
    with pytest.raises(ApprovalDecided):
        expired.decide(parse_decision({"decision": "approve"}), by="user:ana", at=NOW)


def test_a_decision_after_the_deadline_expires_the_approval_instead() -> None:
    approval = pending(expires_at=NOW + timedelta(seconds=60))
    assert not approval.is_due(NOW)
    assert approval.is_due(NOW + timedelta(seconds=60))
    late = approval.decide(
        parse_decision({"decision": "approve"}), by="user:ana", at=NOW + timedelta(seconds=61)
    )
    assert late.state is S.EXPIRED and not late.is_granted


def test_an_approval_without_a_deadline_never_falls_due() -> None:
    assert not pending().is_due(NOW + timedelta(days=3650))


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({}, "/decision"),
        ({"decision": "maybe"}, "/decision"),
        ({"decision": "approve", "edits": []}, "/edits"),
        ({"decision": "approve", "by": "me"}, "/by"),
    ],
)
def test_a_bad_decision_names_the_field(body: dict[str, Any], pointer: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_decision(body)
    assert [e.pointer for e in refused.value.errors] == [pointer]


def test_the_api_shape_of_an_approval() -> None:
    shown = pending(expires_at=NOW).to_object()
    assert shown["state"] == "pending"
    assert shown["expiresAt"] == "2025-01-02T03:04:05.000000Z"
    assert shown["decidedAt"] is None

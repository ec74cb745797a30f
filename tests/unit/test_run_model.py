"""The Run object, the create body, steps and usage, and the Agent's spec.runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controlplane.domain.agents.model import AgentSpec, parse_agent
from controlplane.domain.errors import BadRequest, ValidationFailed
from controlplane.domain.runs.lifecycle import RunPhase
from controlplane.domain.runs.model import (
    RunRecord,
    RunSpec,
    RunStatus,
    Usage,
    parse_run_create,
)
from controlplane.domain.runs.steps import parse_step, roll_up


def pointers(exc: pytest.ExceptionInfo[ValidationFailed]) -> list[str]:
    return [e.pointer for e in exc.value.errors]


# --- the create body -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [{"q": "2+2"}, "text", 7, [1, "a"], None, True])
def test_any_json_is_an_input(value: Any) -> None:
    assert parse_run_create({"input": value}).input == value


def test_a_body_without_input_names_the_field() -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_run_create({"timeoutSeconds": 5})
    assert pointers(refused) == ["/input"]
    assert refused.value.errors[0].message == "required field is missing"


@pytest.mark.parametrize("timeout", [0, -1, 86401, "ten", 1.5, True])
def test_a_timeout_outside_one_second_to_a_day_names_the_field(timeout: Any) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_run_create({"input": {}, "timeoutSeconds": timeout})
    assert pointers(refused) == ["/timeoutSeconds"]


@pytest.mark.parametrize("timeout", [1, 86400, 3.0])
def test_a_timeout_of_one_second_to_a_day_is_taken(timeout: Any) -> None:
    assert parse_run_create({"input": {}, "timeoutSeconds": timeout}).timeoutSeconds == timeout


def test_the_timeout_and_labels_are_optional() -> None:
    body = parse_run_create({"input": 1})
    assert (body.timeoutSeconds, body.labels) == (None, {})


def test_a_bad_label_names_the_labels_field() -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_run_create({"input": 1, "labels": {"bad key!": "x"}})
    assert pointers(refused) == ["/labels"]


def test_an_unknown_field_is_named() -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_run_create({"input": 1, "priority": 3})
    assert pointers(refused) == ["/priority"]
    assert refused.value.errors[0].message == "unknown field"


def test_text_no_database_can_store_is_a_bad_request_naming_where() -> None:
    with pytest.raises(BadRequest) as refused:
        parse_run_create({"input": {"q": "a\x00b"}})
    assert [e.pointer for e in refused.value.errors] == ["/input/q"]


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValidationFailed):
        parse_run_create(["input"])


# --- the Run object --------------------------------------------------------------------------


def a_record(**status: Any) -> RunRecord:
    return RunRecord(
        id="3f0c",
        tenant="acme",
        agent_id="a1",
        agent="calc",
        name="run-3f0c",
        labels={"team": "x"},
        spec=RunSpec(input={"q": "2+2"}, timeoutSeconds=600),
        status=RunStatus(**status),
        resource_version=7,
        created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_a_record_shows_as_the_run_object_of_the_api() -> None:
    assert a_record().to_object() == {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Run",
        "metadata": {
            "name": "run-3f0c",
            "uid": "3f0c",
            "tenant": "acme",
            "agent": "calc",
            "labels": {"team": "x"},
            "creationTimestamp": "2025-01-02T03:04:05.000000Z",
            "resourceVersion": "7",
        },
        "spec": {"input": {"q": "2+2"}, "timeoutSeconds": 600},
        "status": {
            "phase": "Pending",
            "reason": "",
            "message": "",
            "attempt": 0,
            "startedAt": None,
            "finishedAt": None,
            "output": None,
            "error": None,
            "usage": {
                "inputTokens": 0,
                "outputTokens": 0,
                "cachedInputTokens": 0,
                "reasoningTokens": 0,
                "costUsd": 0.0,
            },
            "conditions": [],
        },
    }


def test_a_finished_record_shows_its_phase_output_and_error() -> None:
    record = a_record(
        phase="Failed", reason="HandlerError", error={"type": "ValueError", "message": "no"}
    )
    assert record.phase is RunPhase.FAILED
    status = record.to_object()["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "HandlerError")
    assert status["error"] == {"type": "ValueError", "message": "no"}


def test_a_status_as_stored_reads_back_the_same() -> None:
    status = RunStatus(phase=RunPhase.RUNNING, attempt=2, output=[1, 2], usage=Usage(inputTokens=3))
    assert RunStatus.model_validate(status.model_dump(mode="json")) == status


# --- steps and usage -------------------------------------------------------------------------


def a_step(call_id: str = "1", **fields: Any) -> dict[str, Any]:
    return {
        "callId": call_id,
        "type": "tool",
        "name": "calculator",
        "input": {"expr": "2+2"},
        "status": "succeeded",
        "output": 4,
        "startedAt": "2025-01-02T03:04:05Z",
        "endedAt": "2025-01-02T03:04:06Z",
        **fields,
    }


def test_a_step_as_the_sdk_reports_it_is_taken() -> None:
    step = parse_step(a_step(usage={"inputTokens": 5}, attempt=2, parentCallId="0"))
    assert (step.callId, step.type, step.output, step.attempt) == ("1", "tool", 4, 2)
    assert step.usage.inputTokens == 5


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"type": "shell"}, "/type"),
        ({"status": "running"}, "/status"),
        ({"callId": ""}, "/callId"),
        ({"callId": "has space"}, "/callId"),
        ({"attempt": 0}, "/attempt"),
        ({"usage": {"inputTokens": -1}}, "/usage/inputTokens"),
        ({"error": {"message": "no type"}}, "/error/type"),
    ],
)
def test_a_bad_step_names_the_field(fields: dict[str, Any], pointer: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_step(a_step(**fields))
    assert pointer in pointers(refused)


def test_a_failed_step_needs_an_error_and_a_succeeded_one_has_none() -> None:
    with pytest.raises(ValidationFailed):
        parse_step(a_step(status="failed"))
    with pytest.raises(ValidationFailed):
        parse_step(a_step(error={"type": "E", "message": "m"}))
    failed = parse_step(a_step(status="failed", output=None, error={"type": "E"}))
    assert failed.error is not None and failed.error.type == "E"


def test_the_usage_of_a_run_is_the_sum_of_its_steps_each_call_id_once() -> None:
    steps = [
        parse_step(a_step("1", usage={"inputTokens": 10, "outputTokens": 2, "costUsd": 0.5})),
        parse_step(
            a_step(
                "2",
                type="llm",
                status="failed",
                output=None,
                error={"type": "Timeout"},
                usage={"inputTokens": 1, "cachedInputTokens": 4, "reasoningTokens": 3},
            )
        ),
        parse_step(a_step("1", usage={"inputTokens": 99})),  # the same call, reported again
    ]
    assert roll_up(steps) == Usage(
        inputTokens=11, outputTokens=2, cachedInputTokens=4, reasoningTokens=3, costUsd=0.5
    )
    assert roll_up([]) == Usage()


# --- spec.runs on the Agent ------------------------------------------------------------------


def agent(runs: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"image": "x"}
    if runs is not None:
        spec["runs"] = runs
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "a"},
        "spec": spec,
    }


def test_spec_runs_has_its_defaults_when_absent() -> None:
    runs = parse_agent(agent()).spec.runs
    assert runs.model_dump() == {
        "concurrency": 1,
        "queue": "enqueue",
        "maxQueued": 100,
        "timeoutSeconds": 600,
        "maxAttempts": 3,
        "approval": "none",
        "idleSuspendSeconds": 0,
    }


def test_spec_runs_takes_values_at_its_bounds() -> None:
    runs = {
        "concurrency": 64,
        "queue": "reject",
        "maxQueued": 0,
        "timeoutSeconds": 86400,
        "maxAttempts": 20,
        "approval": "destructive",
        "idleSuspendSeconds": 30 * 86400,
    }
    assert parse_agent(agent(runs)).spec.runs.model_dump() == runs
    low = {"concurrency": 1, "timeoutSeconds": 1, "maxAttempts": 1, "approval": "all"}
    assert parse_agent(agent(low)).spec.runs.model_dump().items() >= low.items()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("concurrency", 0),
        ("concurrency", 65),
        ("queue", "drop"),
        ("maxQueued", -1),
        ("timeoutSeconds", 0),
        ("timeoutSeconds", 86401),
        ("maxAttempts", 0),
        ("maxAttempts", 21),
        ("approval", "some"),
        ("concurrency", True),
        ("idleSuspendSeconds", -1),
        ("idleSuspendSeconds", 30 * 86400 + 1),
    ],
)
def test_spec_runs_out_of_bounds_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_agent(agent({field: value}))
    assert pointers(refused) == [f"/spec/runs/{field}"]


def test_a_change_of_spec_runs_leaves_the_sandbox_alone() -> None:
    before = AgentSpec.model_validate({"image": "x"})
    after = AgentSpec.model_validate({"image": "x", "runs": {"concurrency": 4}})
    assert before.sandbox_fingerprint() == after.sandbox_fingerprint()
    assert "runs" not in before.sandbox_fingerprint()

"""Runs as A2A tasks (controlplane/api/a2a/tasks.py): task states from run phases, messages
as run inputs, the output as the task's artifact."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.api.a2a import tasks
from controlplane.domain.errors import BadRequest


def _run(phase: str, reason: str = "", output: Any = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "run-1",
            "uid": "u-1",
            "labels": {tasks.CONTEXT_LABEL: "ctx-1", tasks.MESSAGE_LABEL: "m-1"},
            "creationTimestamp": "2026-12-01T00:00:00Z",
        },
        "spec": {"input": {"steps": 1}},
        "status": {"phase": phase, "reason": reason, "output": output, **status},
    }


@pytest.mark.parametrize(
    ("phase", "reason", "state"),
    [
        ("Pending", "Created", "TASK_STATE_SUBMITTED"),
        ("Dispatched", "Dispatched", "TASK_STATE_SUBMITTED"),
        ("Running", "Started", "TASK_STATE_WORKING"),
        ("InputRequired", "ApprovalRequested", "TASK_STATE_INPUT_REQUIRED"),
        ("Succeeded", "Completed", "TASK_STATE_COMPLETED"),
        ("Failed", "HandlerError", "TASK_STATE_FAILED"),
        ("TimedOut", "Timeout", "TASK_STATE_FAILED"),
        ("Canceled", "CanceledByUser", "TASK_STATE_CANCELED"),
        ("Failed", "Rejected", "TASK_STATE_REJECTED"),
    ],
)
def test_the_task_state_of_each_run_phase(phase: str, reason: str, state: str) -> None:
    assert tasks.task(_run(phase, reason))["status"]["state"] == state


def test_a_succeeded_run_has_its_output_as_the_artifact_and_its_input_as_history() -> None:
    task = tasks.task(_run("Succeeded", "Completed", {"ok": True}))
    assert (task["id"], task["contextId"]) == ("run-1", "ctx-1")
    assert task["artifacts"] == [
        {
            "artifactId": "output",
            "name": "output",
            "parts": [{"data": {"ok": True}, "mediaType": "application/json"}],
        }
    ]
    assert task["history"][0]["messageId"] == "m-1"
    assert task["history"][0]["parts"] == [{"data": {"steps": 1}, "mediaType": "application/json"}]


def test_a_failed_run_says_why_in_its_status_message() -> None:
    run = _run("Failed", "HandlerError", error={"type": "RuntimeError", "message": "boom"})
    assert tasks.task(run)["status"]["message"]["parts"] == [{"text": "boom"}]


def test_a_message_is_a_run_input() -> None:
    one_data = {"messageId": "m", "parts": [{"data": {"a": 1}}]}
    one_text = {"messageId": "m", "parts": [{"text": "hi"}]}
    several = {"messageId": "m", "parts": [{"text": "hi"}, {"data": 1}]}
    assert tasks.run_create(one_data)["input"] == {"a": 1}
    assert tasks.run_create(one_text)["input"] == "hi"
    assert tasks.run_create(several)["input"] == {"parts": several["parts"]}
    labels = tasks.run_create({**one_text, "contextId": "c-9"})["labels"]
    assert labels == {tasks.MESSAGE_LABEL: "m", tasks.CONTEXT_LABEL: "c-9"}


@pytest.mark.parametrize(
    "message",
    [None, {"parts": [{"text": "x"}]}, {"messageId": "a b", "parts": [{"text": "x"}]},
     {"messageId": "m", "parts": []}],
)  # fmt: skip
def test_a_message_that_cannot_be_a_run_is_refused(message: Any) -> None:
    with pytest.raises(BadRequest):
        tasks.run_create(message)


def test_streams_end_at_terminal_and_interrupted_states() -> None:
    assert tasks.is_final("TASK_STATE_INPUT_REQUIRED") and tasks.is_final("TASK_STATE_COMPLETED")
    assert not tasks.is_final("TASK_STATE_WORKING")
    assert tasks.phases_of("TASK_STATE_SUBMITTED") == ["Pending", "Dispatched"]

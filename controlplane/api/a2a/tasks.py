"""Runs as A2A tasks, messages as run inputs (architecture/a2a.md).

A2A specification v1.0, JSON-RPC binding, ProtoJSON field names (`contextId`, `TASK_STATE_*`,
`ROLE_*`). Pure translation: no I/O. A run is a task: the task id is the run's name, the
context id is the run's label `a2a.agentos.io/context-id`, the task state is
`domain.runs.lifecycle.a2a_state` of its phase, and its output is the task's one artifact.
"""

from __future__ import annotations

import uuid
from typing import Any

from controlplane.domain.errors import BadRequest, FieldError
from controlplane.domain.runs.lifecycle import A2A_STATE, A2ATaskState, RunPhase, a2a_state

CONTEXT_LABEL = "a2a.agentos.io/context-id"
MESSAGE_LABEL = "a2a.agentos.io/message-id"
OUTPUT_ARTIFACT = "output"
JSON_MEDIA = "application/json"
_LABEL_VALUE_MAX = 63
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def proto_state(state: A2ATaskState) -> str:
    """`input-required` → `TASK_STATE_INPUT_REQUIRED` (the v1.0 ProtoJSON enum name)."""
    return "TASK_STATE_" + state.value.upper().replace("-", "_")


def phases_of(proto: str) -> list[RunPhase]:
    """The run phases whose task state is `proto` (`TASK_STATE_WORKING` → [Running]).
    `TASK_STATE_REJECTED` is Failed (the caller keeps only those with reason Rejected).
    Raises BadRequest for a name that is not a task state runs can be in."""
    if proto == proto_state(A2ATaskState.REJECTED):
        return [RunPhase.FAILED]
    found = [phase for phase, state in A2A_STATE.items() if proto_state(state) == proto]
    if not found:
        raise BadRequest(f"status: {proto!r} is not a task state of this agent")
    return found


def _label_value(value: Any, field: str) -> str:
    """`value` if it can be a Kubernetes label value (what a run stores it in)."""
    ok = isinstance(value, str) and 0 < len(value) <= _LABEL_VALUE_MAX
    if not ok or not set(value) <= _LABEL_CHARS:
        raise BadRequest(
            f"{field}: 1-63 of [A-Za-z0-9-_.] (it is stored as a run label)",
            errors=[FieldError(f"/message/{field}", "1-63 of [A-Za-z0-9-_.]")],
        )
    return str(value)


def run_input(message: dict[str, Any]) -> Any:
    """The run input of an A2A message: the `data` of its only part when that is a data
    part, the `text` when it is a text part, else `{"parts": [...]}` as sent."""
    parts = message.get("parts")
    if not isinstance(parts, list) or not parts:
        raise BadRequest(
            "message.parts: at least one part", errors=[FieldError("/message/parts", "required")]
        )
    if len(parts) == 1 and isinstance(parts[0], dict):
        if "data" in parts[0]:
            return parts[0]["data"]
        if isinstance(parts[0].get("text"), str):
            return parts[0]["text"]
    return {"parts": parts}


def run_create(message: Any) -> dict[str, Any]:
    """The body of a create-run request for A2A `message` (an object with `messageId`,
    `parts`, optional `contextId`; continuing a task (`taskId`) is refused). Raises
    BadRequest naming the field."""
    if not isinstance(message, dict):
        raise BadRequest("message: an object", errors=[FieldError("/message", "required")])
    message_id = _label_value(message.get("messageId"), "messageId")
    context = message.get("contextId") or str(uuid.uuid4())
    labels = {MESSAGE_LABEL: message_id, CONTEXT_LABEL: _label_value(context, "contextId")}
    return {"input": run_input(message), "labels": labels}


def _parts(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"text": value}]
    return [{"data": value, "mediaType": JSON_MEDIA}]


def _agent_message(task_id: str, context_id: str, text: str) -> dict[str, Any]:
    return {
        "messageId": f"{task_id}-status",
        "taskId": task_id,
        "contextId": context_id,
        "role": "ROLE_AGENT",
        "parts": [{"text": text}],
    }


def task_status(run: dict[str, Any]) -> dict[str, Any]:
    """The TaskStatus of a Run object: state, timestamp, and for a run that did not succeed
    a message saying why (its error or status message)."""
    status = run["status"]
    phase = RunPhase(status["phase"])
    meta = run["metadata"]
    out: dict[str, Any] = {"state": proto_state(a2a_state(phase, status.get("reason", "")))}
    stamp = status.get("finishedAt") or status.get("startedAt") or meta["creationTimestamp"]
    out["timestamp"] = stamp
    error = status.get("error")
    why = (error or {}).get("message") or status.get("message")
    if phase not in (RunPhase.SUCCEEDED, RunPhase.PENDING) and why:
        context = meta.get("labels", {}).get(CONTEXT_LABEL, meta["uid"])
        out["message"] = _agent_message(meta["name"], context, str(why))
    return out


def artifact(run: dict[str, Any]) -> dict[str, Any]:
    """The run's output as the artifact `output` (a text part for a string, else a data
    part, `application/json`)."""
    return {
        "artifactId": OUTPUT_ARTIFACT,
        "name": OUTPUT_ARTIFACT,
        "parts": _parts(run["status"].get("output")),
    }


def task(run: dict[str, Any], *, history: bool = True) -> dict[str, Any]:
    """The A2A Task of a Run object (`Run` dumped to JSON): id (the run's name), contextId,
    status, the output artifact once Succeeded, the input message as history, and the run's
    identity in `metadata`."""
    meta = run["metadata"]
    labels = meta.get("labels", {})
    context = labels.get(CONTEXT_LABEL, meta["uid"])
    out: dict[str, Any] = {
        "id": meta["name"],
        "contextId": context,
        "status": task_status(run),
        "metadata": {
            "agentos.io/run": meta["name"],
            "agentos.io/uid": meta["uid"],
            "agentos.io/phase": run["status"]["phase"],
        },
    }
    if run["status"]["phase"] == RunPhase.SUCCEEDED:
        out["artifacts"] = [artifact(run)]
    if history:
        out["history"] = [
            {
                "messageId": labels.get(MESSAGE_LABEL, f"{meta['name']}-input"),
                "taskId": meta["name"],
                "contextId": context,
                "role": "ROLE_USER",
                "parts": _parts(run["spec"].get("input")),
            }
        ]
    return out


def rejected_task(context_id: str | None, reason: str) -> dict[str, Any]:
    """The answer to a message refused at admission (no run was made): a task in state
    `TASK_STATE_REJECTED` that cannot be read back."""
    task_id = f"rejected-{uuid.uuid4().hex[:12]}"
    context = context_id or str(uuid.uuid4())
    return {
        "id": task_id,
        "contextId": context,
        "status": {
            "state": proto_state(A2ATaskState.REJECTED),
            "message": _agent_message(task_id, context, reason),
        },
    }


def status_update(run: dict[str, Any]) -> dict[str, Any]:
    """A StreamResponse `statusUpdate` for a Run object."""
    full = task(run, history=False)
    return {
        "statusUpdate": {
            "taskId": full["id"],
            "contextId": full["contextId"],
            "status": full["status"],
        }
    }


def artifact_update(run: dict[str, Any]) -> dict[str, Any]:
    """A StreamResponse `artifactUpdate` carrying the run's output, whole (`lastChunk`)."""
    full = task(run, history=False)
    return {
        "artifactUpdate": {
            "taskId": full["id"],
            "contextId": full["contextId"],
            "artifact": artifact(run),
            "lastChunk": True,
        }
    }


def is_final(state: str) -> bool:
    """Whether a stream ends at this task state: terminal, or interrupted (input-required),
    as the A2A specification says of streams."""
    return state in {
        proto_state(s)
        for s in (
            A2ATaskState.COMPLETED,
            A2ATaskState.FAILED,
            A2ATaskState.CANCELED,
            A2ATaskState.REJECTED,
            A2ATaskState.INPUT_REQUIRED,
        )
    }

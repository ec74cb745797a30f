"""Steps: the journal of what a run did (model calls, tool calls, the agent's own steps).

The SDK reports a step when it ends. Each has a `callId` deterministic within the run (its
ordinal, or a key the agent's code gives), so a redelivered run that reaches a step whose
`callId` already succeeded gets the recorded output instead of executing it again. A run's
usage is the sum of its steps' usage (`roll_up`). Names follow the OpenTelemetry GenAI
semantic conventions where they exist (`chat` is a step of type `llm`, `execute_tool` of
type `tool`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, JsonValue, ValidationError, field_validator, model_validator

from controlplane.domain.agents.model import Int, Strict, field_errors, refuse_unstorable
from controlplane.domain.errors import ValidationFailed
from controlplane.domain.runs.model import ErrorInfo, Usage

CALL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$"
StepType = Literal["llm", "tool", "custom"]
StepStatus = Literal["succeeded", "failed"]


class Step(Strict):
    """One finished step of a run. Times are RFC 3339 UTC strings; `attempt` is the delivery
    of the run that executed it; `parentCallId` nests a step under another (a tool call
    made inside a model call's turn, say). A failed step has an `error`, a succeeded one
    none."""

    callId: str = Field(pattern=CALL_ID_PATTERN)
    type: StepType
    name: str = Field(min_length=1, max_length=200)
    input: JsonValue = None
    status: StepStatus
    output: JsonValue = None
    error: ErrorInfo | None = None
    usage: Usage = Field(default_factory=Usage)
    startedAt: str
    endedAt: str
    attempt: Int = Field(default=1, ge=1)
    parentCallId: str | None = Field(default=None, pattern=CALL_ID_PATTERN)

    @field_validator("usage", mode="before")
    @classmethod
    def no_usage_is_zero_usage(cls, value: Any) -> Any:
        """The SDK sends `usage: null` for a step that used no tokens."""
        return Usage() if value is None else value

    @model_validator(mode="after")
    def error_matches_status(self) -> Step:
        if self.status == "failed" and self.error is None:
            raise ValueError("a failed step needs an error")
        if self.status == "succeeded" and self.error is not None:
            raise ValueError("a succeeded step has no error")
        if self.parentCallId == self.callId:
            raise ValueError("a step cannot be its own parent")
        return self


def parse_step(body: Any) -> Step:
    """Validate a step as the SDK reports it.

    Raises:
        ValidationFailed: one FieldError per problem, named by RFC 6901 JSON pointer into the
            body (`/callId`, `/usage/inputTokens`, ...; `` for a rule across fields).
        BadRequest: a string holds a NUL or an unpaired surrogate.
    """
    refuse_unstorable(body)
    try:
        return Step.model_validate(body)
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{fe.pointer or '/'}: {fe.message}" for fe in errors)
        raise ValidationFailed(f"invalid step: {detail}", errors=errors) from None


def roll_up(steps: Iterable[Step]) -> Usage:
    """The run's usage: the sum of its steps' usage (tokens and cost), failed steps included
    (their tokens were spent). A step recorded twice under one `callId` counts once: the
    journal keeps one row per `callId`, and so does this sum (the first one seen)."""
    total = Usage()
    seen: set[str] = set()
    for step in steps:
        if step.callId in seen:
            continue
        seen.add(step.callId)
        total = total + step.usage
    return total


@dataclass(frozen=True)
class Checkpoint:
    """The state a run saved (`run.checkpoint(state)`, any JSON) during delivery `attempt`;
    the next attempt starts from the latest one. `saved_at` is timezone-aware UTC."""

    run_id: str
    state: Any
    attempt: int
    saved_at: datetime

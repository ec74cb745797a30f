"""The Run object: `apiVersion: agentos.io/v1alpha1`, `kind: Run`, metadata, spec, status.

A run is one unit of work given to one agent (architecture/state-machines.md, "Run
lifecycle"). `parse_run_create` validates the body of a create request
(`{"input": <any JSON>, "timeoutSeconds": N?, "labels": {...}?}`) or raises ValidationFailed
naming each bad field by JSON pointer (RFC 6901), as `parse_agent` does for agents.
`RunRecord` is what the data layer hands the service layer about one stored run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
)

from controlplane.domain.agents.model import (
    _LABELS_SCHEMA,
    Float,
    Int,
    Strict,
    field_errors,
    label_problem,
    not_bool,
    refuse_unstorable,
)
from controlplane.domain.errors import ValidationFailed
from controlplane.domain.events.envelope import rfc3339
from controlplane.domain.runs.lifecycle import RunPhase
from controlplane.domain.runs.notify import NotifyTarget

KIND = "Run"  # apiVersion is the Agent's: agentos.io/v1alpha1
TIMEOUT_MAX_S = 86400


def _valid_labels(labels: dict[str, str]) -> dict[str, str]:
    problems = [p for k, v in labels.items() if (p := label_problem(k, v))]
    if problems:
        raise ValueError("; ".join(problems))
    return labels


class RunCreate(Strict):
    """The body of `POST .../agents/{agent}/runs`. `timeoutSeconds` absent means the agent's
    `spec.runs.timeoutSeconds`; `labels` are Kubernetes labels, for `labelSelector`."""

    input: JsonValue = Field(description="Any JSON value; handed to the agent's handler.")
    # Bounds on the integer itself, so the JSON Schema states them (not `ge` on the union).
    timeoutSeconds: (
        Annotated[int, Field(ge=1, le=TIMEOUT_MAX_S), BeforeValidator(not_bool)] | None
    ) = None
    labels: dict[str, str] = Field(default_factory=dict, json_schema_extra=_LABELS_SCHEMA)
    notify: NotifyTarget | None = Field(
        default=None,
        description="A webhook POSTed once when the run ends, signed with `secret` "
        "(architecture/runs.md, Notify). The secret is never shown again.",
    )

    @field_validator("labels")
    @classmethod
    def kubernetes_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return _valid_labels(labels)


def parse_run_create(body: Any) -> RunCreate:
    """Validate the body of a create-run request.

    Raises:
        ValidationFailed: one FieldError per problem, `pointer` an RFC 6901 JSON pointer into
            the body (`/input` when it is missing, `/timeoutSeconds` out of 1..86400, ...).
        BadRequest: a string holds a NUL or an unpaired surrogate (named likewise).
    """
    refuse_unstorable(body)
    try:
        return RunCreate.model_validate(body)
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{fe.pointer}: {fe.message}" for fe in errors)
        raise ValidationFailed(f"invalid run: {detail}", errors=errors) from None


class Usage(BaseModel):
    """Tokens and cost of a step, or of a run (the sum of its steps). Token names follow the
    OpenTelemetry GenAI semantic conventions (`gen_ai.usage.input_tokens`, ...); `costUsd` is
    in US dollars."""

    model_config = ConfigDict(extra="forbid")

    inputTokens: Int = Field(default=0, ge=0)
    outputTokens: Int = Field(default=0, ge=0)
    cachedInputTokens: Int = Field(default=0, ge=0)
    reasoningTokens: Int = Field(default=0, ge=0)
    costUsd: Float = Field(default=0.0, ge=0)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            inputTokens=self.inputTokens + other.inputTokens,
            outputTokens=self.outputTokens + other.outputTokens,
            cachedInputTokens=self.cachedInputTokens + other.cachedInputTokens,
            reasoningTokens=self.reasoningTokens + other.reasoningTokens,
            costUsd=self.costUsd + other.costUsd,
        )


class ErrorInfo(BaseModel):
    """What went wrong: `type` is the error's class or a stable code, `message` for people."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=200)
    message: str = Field(default="", max_length=10_000)


class RunMetadata(BaseModel):
    """Identity of a run. `agent` is the agent's name in `tenant`; `resourceVersion` is an
    opaque string (Kubernetes API conventions) that changes with every write."""

    name: str
    uid: str
    tenant: str
    agent: str
    labels: dict[str, str] = Field(default_factory=dict)
    creationTimestamp: str
    resourceVersion: str


class RunSpec(BaseModel):
    """Desired: the input and the time the run may take from creation to its end."""

    input: JsonValue = None
    timeoutSeconds: int = Field(ge=1, le=TIMEOUT_MAX_S)


class ReplayOf(BaseModel):
    """The run a replay replays (architecture/replay.md): its `name` and `uid`, the `mode`
    (`recorded`: the origin's steps before `fromStep` are served from its journal; `live`:
    everything runs again) and `fromStep` (1-based position in the origin's journal; None:
    every step)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    uid: str
    mode: Literal["recorded", "live"]
    fromStep: int | None = None


class Divergence(BaseModel):
    """A replayed step whose call differs from the origin's: `step` its 1-based position in
    the origin's journal, `callId`, and both calls (`recorded`, `actual`: `type`, `name`,
    `input`). From there the replay runs live."""

    model_config = ConfigDict(extra="forbid")

    step: int
    callId: str
    recorded: dict[str, Any]
    actual: dict[str, Any]


class RunStatus(BaseModel):
    """Observed. `attempt` counts deliveries (0 while Pending, `attempt_after`); times are
    RFC 3339 UTC strings; `usage` is the roll-up of the run's steps."""

    model_config = ConfigDict(extra="ignore")

    phase: RunPhase = RunPhase.PENDING
    reason: str = ""
    message: str = ""
    attempt: int = 0
    startedAt: str | None = None
    finishedAt: str | None = None
    output: JsonValue = None
    error: ErrorInfo | None = None
    usage: Usage = Field(default_factory=Usage)
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    # A replay's origin and divergences; shown only on replays.
    replayOf: ReplayOf | None = None
    divergences: list[Divergence] = Field(default_factory=list)


class Run(BaseModel):
    """A run as the API answers it."""

    apiVersion: Literal["agentos.io/v1alpha1"] = "agentos.io/v1alpha1"
    kind: Literal["Run"] = "Run"
    metadata: RunMetadata
    spec: RunSpec
    status: RunStatus


@dataclass(frozen=True)
class RunRecord:
    """One stored run: identity, its agent (`agent_id` the agent's uid, `agent` its name),
    desired spec, observed status and version."""

    id: str
    tenant: str
    agent_id: str
    agent: str
    name: str
    labels: dict[str, str]
    spec: RunSpec
    status: RunStatus
    resource_version: int
    created_at: datetime

    @property
    def phase(self) -> RunPhase:
        return self.status.phase

    @property
    def deadline(self) -> datetime:
        """When the run must have ended: creation + `spec.timeoutSeconds` (UTC)."""
        return self.created_at + timedelta(seconds=self.spec.timeoutSeconds)

    def to_object(self) -> dict[str, Any]:
        """The Run as the API and the CLI show it (`Run` dumped to JSON)."""
        run = Run(
            metadata=RunMetadata(
                name=self.name,
                uid=self.id,
                tenant=self.tenant,
                agent=self.agent,
                labels=self.labels,
                creationTimestamp=rfc3339(self.created_at),
                resourceVersion=str(self.resource_version),
            ),
            spec=self.spec,
            status=self.status,
        )
        body = run.model_dump(mode="json")
        if self.status.replayOf is None:
            del body["status"]["replayOf"], body["status"]["divergences"]
        return body

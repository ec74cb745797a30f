"""The wire shapes of the gateway's run protocol (architecture/gateway-protocol.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, NotRequired, TypeAlias, TypedDict

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None
"""Any JSON value, as `json.loads` returns it."""

StepType: TypeAlias = Literal["llm", "tool", "custom"]
StepStatus: TypeAlias = Literal["succeeded", "failed"]


class ErrorBody(TypedDict):
    type: str
    message: str


class UsageBody(TypedDict):
    inputTokens: int
    outputTokens: int
    cachedInputTokens: int
    reasoningTokens: int


class RunBody(TypedDict):
    name: str
    agent: str
    tenant: str
    attempt: int
    input: JSON
    timeoutSeconds: int
    deadline: str
    labels: dict[str, str]
    traceparent: str | None
    approval: NotRequired[Literal["none", "destructive", "all"]]


class RecordedStep(TypedDict):
    callId: str
    type: StepType
    name: str
    status: StepStatus
    input: JSON
    output: JSON
    error: ErrorBody | None
    replayed: NotRequired[bool]


class CheckpointBody(TypedDict):
    state: JSON
    callId: str | None


class JournalBody(TypedDict):
    steps: list[RecordedStep]
    checkpoint: CheckpointBody | None


class Delivery(TypedDict):
    """`200` of `POST /runs:next`."""

    run: RunBody
    journal: JournalBody


class StepReport(TypedDict):
    """Body of `POST /runs/{run}/steps`."""

    callId: str
    type: StepType
    name: str
    input: JSON
    status: StepStatus
    output: JSON
    error: ErrorBody | None
    usage: UsageBody | None
    startedAt: str
    endedAt: str
    attempt: int
    parentCallId: str | None
    approvalId: NotRequired[str]
    destructive: NotRequired[bool]


class ApprovalBody(TypedDict):
    """An approval as the gateway answers it (`POST`/`GET /runs/{run}/approvals...`)."""

    id: str
    run: str
    step: str
    action: str
    details: dict[str, JSON]
    state: Literal["pending", "approved", "rejected", "expired"]
    arguments: dict[str, JSON]
    edits: dict[str, JSON] | None
    comment: str
    decidedBy: str | None
    decidedAt: str | None
    expiresAt: str | None


class HeartbeatReply(TypedDict):
    cancelRequested: bool
    deadline: NotRequired[str]


def rfc3339(moment: datetime) -> str:
    """`moment` as RFC 3339 UTC with milliseconds, e.g. `2025-01-31T12:00:00.123Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime (naive input is taken as UTC)."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)

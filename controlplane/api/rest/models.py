"""The API's response shapes, for validation-free documentation in OpenAPI.

Request bodies of agents are validated by the domain model (controlplane/domain/agents/model.py,
`parse_agent`), the one source of validation for REST, gRPC, the CLI and the CRD.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from controlplane.domain.agents.model import AgentSpec, not_bool
from controlplane.domain.quantity import CPU_PATTERN, MEMORY_PATTERN


class ObjectMetaOut(BaseModel):
    name: str
    namespace: str
    uid: str
    labels: dict[str, str]
    annotations: dict[str, str]
    generation: int
    resourceVersion: str = Field(description="The object's version, for If-Match.")
    creationTimestamp: str
    deletionTimestamp: str | None = None


class AgentObject(BaseModel):
    """An Agent as stored: the manifest plus metadata set by the server and `status`."""

    apiVersion: Literal["agentos.io/v1alpha1"]
    kind: Literal["Agent"]
    metadata: ObjectMetaOut
    spec: AgentSpec
    status: dict[str, Any]


class ListMeta(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    resourceVersion: str = Field(description="Feed position: watch from here to miss nothing.")
    continue_: str | None = Field(
        default=None, alias="continue", description="Pass as `continue` for the next page."
    )


class AgentList(BaseModel):
    apiVersion: Literal["agentos.io/v1alpha1"]
    kind: Literal["AgentList"]
    metadata: ListMeta
    items: list[AgentObject]


class WatchEventOut(BaseModel):
    """One line of a watch stream (newline-delimited JSON)."""

    type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
    resourceVersion: str
    object: dict[str, Any] | None
    event: dict[str, Any] | None


class AgentEvent(BaseModel):
    event_id: str
    event_type: str
    sequence: int
    occurred_at: str
    state: str
    payload: dict[str, Any]


class AgentEventList(BaseModel):
    items: list[AgentEvent]


class Quota(BaseModel):
    """A tenant's quota; an absent field is no limit. Quantities as in Kubernetes."""

    model_config = ConfigDict(extra="forbid")
    agents: Annotated[int, Field(ge=0, le=10**9), BeforeValidator(not_bool)] | None = None
    cpu: str | None = Field(default=None, pattern=CPU_PATTERN, max_length=32, examples=["4"])
    memory: str | None = Field(
        default=None, pattern=MEMORY_PATTERN, max_length=32, examples=["8Gi"]
    )


class TenantMetaIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = None
    resourceVersion: str | None = Field(
        default=None, description="Make the write conditional (409 CONFLICT when stale)."
    )


class TenantIn(BaseModel):
    """A tenant as written: its quota (what a GET returns may be PUT back)."""

    model_config = ConfigDict(extra="forbid")
    apiVersion: Literal["agentos.io/v1alpha1"] | None = None
    kind: Literal["Tenant"] | None = None
    metadata: TenantMetaIn | None = None
    quota: Quota = Field(default_factory=Quota)


class TenantMeta(BaseModel):
    name: str
    resourceVersion: str
    creationTimestamp: str


class TenantObject(BaseModel):
    apiVersion: Literal["agentos.io/v1alpha1"]
    kind: Literal["Tenant"]
    metadata: TenantMeta
    quota: Quota


class TenantList(BaseModel):
    apiVersion: Literal["agentos.io/v1alpha1"]
    kind: Literal["TenantList"]
    metadata: ListMeta
    items: list[TenantObject]


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    principal: str = Field(min_length=1, max_length=128, pattern=r"^[\w.@:+-]+$")
    role: Literal["viewer", "editor", "admin"]
    ttlSeconds: (
        Annotated[float, Field(gt=0, le=10 * 365 * 86400), BeforeValidator(not_bool)] | None
    ) = None


class TokenObject(BaseModel):
    """A token as listed; `token` (the secret) appears only in the answer that creates it."""

    id: str
    principal: str
    tenant: str | None
    role: str | None
    platformAdmin: bool
    createdAt: str
    createdBy: str
    expiresAt: str | None
    revokedAt: str | None
    token: str | None = None


class TokenList(BaseModel):
    items: list[TokenObject]


class OutboxStatusOut(BaseModel):
    counts: dict[str, int]
    oldestUnpublishedAgeSeconds: float | None
    deadLettersOpen: int


class ReplayIn(BaseModel):
    """Exactly one selector: `fromEventId`, `since` (RFC 3339), or `aggregate` (TYPE/ID)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["fromEventId"]},
                {"required": ["since"]},
                {"required": ["aggregate"]},
            ]
        },
    )
    fromEventId: Annotated[str, Field(min_length=1, max_length=64)] | SkipJsonSchema[None] = None
    since: datetime | SkipJsonSchema[None] = None
    aggregate: Annotated[str, Field(min_length=1, max_length=200)] | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def exactly_one(self) -> ReplayIn:
        given = [k for k in ("fromEventId", "since", "aggregate") if getattr(self, k) is not None]
        if len(given) != 1 or len(self.model_fields_set) != 1:
            raise ValueError("give exactly one of fromEventId, since, aggregate")
        return self


class CountOut(BaseModel):
    count: int


class DeadLetterOut(BaseModel):
    eventId: str
    source: str
    reason: str
    attempts: int
    deadAt: str
    requeuedAt: str | None
    envelope: dict[str, Any]


class DeadLetterList(BaseModel):
    items: list[DeadLetterOut]

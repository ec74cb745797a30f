"""What the data layer hands the service layer and the controller: agents, tenants, tokens and
stored events, as plain frozen records (no SQL, no framework)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controlplane.domain.access import Principal, Role
from controlplane.domain.agents.lifecycle import Phase
from controlplane.domain.agents.model import API_VERSION, KIND, AgentSpec, AgentStatus
from controlplane.domain.events.envelope import rfc3339


@dataclass(frozen=True)
class AgentRecord:
    """One stored agent: identity, desired spec, observed status and versions."""

    id: str
    tenant: str
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    spec: AgentSpec
    status: AgentStatus
    generation: int
    resource_version: int
    created_at: datetime
    deletion_requested_at: datetime | None

    @property
    def phase(self) -> Phase:
        return Phase(self.status.phase)

    def to_manifest(self) -> dict[str, Any]:
        """The Agent as the API and the CLI show it (same shape as the manifest)."""
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self.tenant,
            "uid": self.id,
            "labels": self.labels,
            "annotations": self.annotations,
            "generation": self.generation,
            "resourceVersion": str(self.resource_version),
            "creationTimestamp": rfc3339(self.created_at),
        }
        if self.deletion_requested_at is not None:
            metadata["deletionTimestamp"] = rfc3339(self.deletion_requested_at)
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": metadata,
            "spec": self.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            "status": self.status.model_dump(mode="json", exclude_none=True),
        }


@dataclass(frozen=True)
class TenantRecord:
    """A tenant row. `quota` keys: `agents`, `cpu_millis`, `memory_bytes` (absent: no limit)."""

    name: str
    quota: dict[str, int]
    resource_version: int
    created_at: datetime


@dataclass(frozen=True)
class TokenRecord:
    """A token as listed: never the secret, nor its hash."""

    id: str
    principal: str
    tenant: str | None
    role: Role | None
    platform_admin: bool
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    def as_principal(self) -> Principal:
        """The caller this token authenticates."""
        return Principal(self.principal, self.tenant, self.role, self.platform_admin, self.id)


@dataclass(frozen=True)
class StoredEvent:
    """One event of an aggregate as the outbox holds it, with its delivery `state`
    (an `OutboxState`); `sequence` counts from 1 within the aggregate."""

    event_id: str
    event_type: str
    sequence: int
    occurred_at: datetime
    state: str
    payload: dict[str, Any]

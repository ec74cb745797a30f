"""Response shapes of the runs and audit routes, for OpenAPI. The Run and Step objects are the
domain's own models (controlplane/domain/runs/), so the document cannot drift from them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from controlplane.domain.runs.model import Run
from controlplane.domain.runs.steps import Step


class RunListMeta(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    continue_: str | None = Field(
        default=None, alias="continue", description="Pass as `continue` for the next page."
    )


class RunList(BaseModel):
    """Runs, newest first."""

    apiVersion: Literal["agentos.io/v1alpha1"]
    kind: Literal["RunList"]
    metadata: RunListMeta
    items: list[Run]


class StepList(BaseModel):
    """A run's journal, in the order steps were recorded."""

    items: list[Step]


class RunEventOut(BaseModel):
    """The `data:` of one server-sent event of `GET .../runs/{run}/events` (its `id:` is
    `sequence`, its `event:` is `type`). Phase events add `fromPhase`, `toPhase`,
    `reason`, `message`, `attempt`; `run.step_recorded` adds `step`."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="The event type, e.g. `run.started`, `run.step_recorded`.")
    sequence: int = Field(description="Per-run; send the last one as `Last-Event-ID`.")
    occurredAt: str
    run: dict[str, Any] = Field(
        description="The Run as the event recorded it; for a step or a checkpoint, only its "
        "`metadata` (name, uid, tenant, agent)."
    )
    step: Step | None = None


class AuditEntryOut(BaseModel):
    id: str
    occurredAt: str
    principal: str = Field(description="Who acted (a token's principal, or `system:...`).")
    tenant: str | None
    action: str = Field(examples=["run.create"])
    resource: str = Field(examples=["tenants/t/agents/a/runs/run-0123456789ab"])
    eventId: str | None
    details: dict[str, Any]


class AuditListMeta(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    continue_: str | None = Field(default=None, alias="continue")


class AuditList(BaseModel):
    """Audit entries, in the order they were written."""

    kind: Literal["AuditList"]
    metadata: AuditListMeta
    items: list[AuditEntryOut]

"""`GET /api/v1/tenants/{tenant}/audit`: the tenant's audit trail, for its admins."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from controlplane.api.errors import responses
from controlplane.api.rest.run_models import AuditList
from controlplane.api.security import TenantName, tenant_access
from controlplane.domain.access import Role
from controlplane.domain.errors import BadRequest, FieldError
from controlplane.domain.events.envelope import as_utc, parse_rfc3339, rfc3339
from controlplane.service import audit as svc
from controlplane.service import listing

if TYPE_CHECKING:
    from controlplane.bootstrap import Container

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}",
    tags=["audit"],
    dependencies=[Depends(tenant_access(read=Role.ADMIN, write=Role.ADMIN))],
)


RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
Moment = Annotated[
    str | None,
    Query(pattern=RFC3339, max_length=40, description="RFC 3339, e.g. 2026-01-02T03:04:05Z."),
]


def _moment(name: str, value: str | None) -> datetime | None:
    """An RFC 3339 time as timezone-aware UTC (fractions beyond microseconds dropped)."""
    if value is None:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value).replace("z", "Z").replace("t", "T")
    try:
        return as_utc(parse_rfc3339(text))
    except ValueError:
        raise BadRequest(
            f"{name}: {value!r} is not an RFC 3339 time",
            errors=[FieldError(name, "RFC 3339, e.g. 2026-01-02T03:04:05Z")],
        ) from None


@router.get(
    "/audit",
    response_model=None,
    responses={
        200: {"description": "Audit entries, oldest first", "model": AuditList},
        **responses("TENANT_NOT_FOUND", "PERMISSION_DENIED", "BAD_REQUEST"),
    },
)
async def list_audit(
    tenant: TenantName,
    request: Request,
    resource: Annotated[
        str | None,
        Query(
            max_length=300,
            description="A resource and what is under it, e.g. `tenants/t/agents/a`.",
        ),
    ] = None,
    actor: Annotated[str | None, Query(max_length=128, description="A principal.")] = None,
    since: Moment = None,
    until: Moment = None,
    limit: Annotated[int, Query(ge=1, le=listing.MAX_LIMIT)] = listing.DEFAULT_LIMIT,
    continue_: Annotated[str | None, Query(alias="continue", max_length=1000)] = None,
) -> Any:
    """Who did what to which resource of the tenant, in the order it was written, a page
    at a time (`limit`, `continue`), filtered by `resource`, `actor`, `since`, `until`.
    Tenant admins only."""
    container: Container = request.app.state.container
    async with container.uow() as uow:
        page = await svc.list_audit(
            uow,
            tenant,
            resource=resource,
            actor=actor,
            since=_moment("since", since),
            until=_moment("until", until),
            limit=limit,
            continue_token=continue_,
        )
    return {
        "kind": "AuditList",
        "metadata": {"continue": page.continue_token} if page.continue_token else {},
        "items": [
            {
                "id": str(e.id),
                "occurredAt": rfc3339(e.occurred_at),
                "principal": e.principal,
                "tenant": e.tenant,
                "action": e.action,
                "resource": e.resource,
                "eventId": e.event_id,
                "details": e.details,
            }
            for e in page.items
        ],
    }

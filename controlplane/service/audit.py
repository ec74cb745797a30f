"""The audit read use case: who did what to which resource of a tenant, and when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from controlplane.data.repositories.audit import AuditFilter, AuditRecord
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import BadRequest
from controlplane.observability.tracing import traced
from controlplane.service.listing import DEFAULT_LIMIT, decode_continue, encode_continue


@dataclass(frozen=True)
class AuditPage:
    """One page of entries, oldest first, and the token of the next (None on the last)."""

    items: list[AuditRecord]
    continue_token: str | None


def _after_id(token: str | None) -> int:
    after = decode_continue(token)
    if after is None:
        return 0
    if not after.isdigit():
        raise BadRequest("continue: not a token issued by this API")
    return int(after)


@traced("service.list_audit")
async def list_audit(
    uow: UnitOfWork,
    tenant: str,
    *,
    resource: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    continue_token: str | None = None,
) -> AuditPage:
    """A page of the audit trail of `tenant`, in the order it was written: entries about
    `resource` or anything under it (`tenants/t/agents/a` takes its runs too), by principal
    `actor`, at or after `since` and before `until` (timezone-aware). Kubernetes list
    conventions: `limit` + `continue`. Raises BadRequest (a continue token this API did
    not issue; `since` after `until`)."""
    if since is not None and until is not None and since > until:
        raise BadRequest("since: must not be after until")
    where = AuditFilter(tenant, resource, actor, since, until)
    items = await uow.audit.page(where, limit=limit + 1, after_id=_after_id(continue_token))
    more = len(items) > limit
    items = items[:limit]
    return AuditPage(items, encode_continue(str(items[-1].id)) if more else None)

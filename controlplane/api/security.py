"""Authentication and authorization as FastAPI dependencies (architecture/api-compatibility.md).

Order, for every `/api/v1` route: 401 (no valid bearer token) → 429 (rate of the principal)
→ 404 (a tenant the caller has no role in: the answer is the same whether the tenant, or the
object named in the path, exists or not) → 403 (the caller sees the tenant but its role does
not allow the action). The tenant check is a dependency of the *router*, so a route added to
a tenant-scoped router cannot forget it; tests/integration/test_api_isolation.py walks the
route table to prove it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from controlplane.api.context import ApiContext
from controlplane.domain.access import Principal, Role
from controlplane.domain.agents.model import DNS1123_LABEL
from controlplane.domain.errors import PermissionDenied, TenantNotFound

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearerToken",
    description="An Agent OS API token (`agentos token create`), as `Authorization: Bearer aos_…`",
)

TenantName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=63,
        pattern=DNS1123_LABEL,
        description="The tenant (a DNS-1123 label).",
    ),
]

READS = frozenset({"GET", "HEAD", "OPTIONS"})


def api_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.api
    return ctx


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller, from `Authorization: Bearer TOKEN`. Raises Unauthenticated (401),
    RateLimited (429)."""
    ctx = api_context(request)
    principal = await ctx.authenticate(credentials.credentials if credentials else None)
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(authenticated)]


def tenant_access(
    read: Role = Role.VIEWER, write: Role = Role.EDITOR
) -> Callable[..., Awaitable[Principal]]:
    """A router dependency for routes under `/tenants/{tenant}`: the caller must see the
    tenant (else TenantNotFound, 404) and hold `read` for GET/HEAD, `write` for any other
    method (else PermissionDenied, 403)."""

    async def check(request: Request, tenant: TenantName, principal: Caller) -> Principal:
        authorize(principal, tenant, read if request.method in READS else write)
        return principal

    return check


def authorize(principal: Principal, tenant: str, needed: Role) -> None:
    """The rule of every tenant-scoped call, REST or gRPC: TenantNotFound when the caller
    has no role in `tenant` (whatever exists there), PermissionDenied when its role is
    below `needed`."""
    if not principal.can_see_tenant(tenant):
        raise TenantNotFound(f"tenant {tenant!r} not found")
    if not principal.has_role(tenant, needed):
        raise PermissionDenied(f"{principal.name!r} needs role {needed!s} in tenant {tenant!r}")


async def platform_admin(principal: Caller) -> Principal:
    """A router dependency for platform-admin routes (tenants lifecycle, outbox)."""
    if not principal.platform_admin:
        raise PermissionDenied(f"{principal.name!r} is not a platform admin")
    return principal


def audit_name(request: Request) -> str:
    """How the audit trail names the caller of this request."""
    principal: Principal = request.state.principal
    return principal.audit_name

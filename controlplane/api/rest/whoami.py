"""`GET /api/v1/whoami`: who the bearer token is, as Kubernetes' SelfSubjectReview answers it.

The console asks once after login, to show only what the caller may do (a viewer sees no
approve button); the API still decides every call on its own (security.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from controlplane.api.errors import responses
from controlplane.api.security import Caller

router = APIRouter(prefix="/api/v1", tags=["tenants"])


class WhoAmI(BaseModel):
    """The caller: its principal's name, its tenant and role (None for a platform admin)."""

    name: str
    tenant: str | None
    role: str | None
    platformAdmin: bool


@router.get(
    "/whoami",
    response_model=None,
    responses={200: {"description": "The caller", "model": WhoAmI}, **responses()},
)
async def whoami(principal: Caller) -> Any:
    """The authenticated caller: `{"name", "tenant", "role", "platformAdmin"}`; 401 without
    a valid token."""
    role = str(principal.role) if principal.role is not None else None
    return WhoAmI(
        name=principal.name,
        tenant=principal.tenant,
        role=role,
        platformAdmin=principal.platform_admin,
    ).model_dump()

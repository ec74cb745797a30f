"""Who may do what: principals, roles per tenant, and the platform admin
(architecture/api-compatibility.md).

Pure rules, no I/O. A bearer token names one principal and grants it either one role in one
tenant or the platform-admin role. The rules:

- `viewer` reads the objects of its tenant;
- `editor` also writes agents;
- `admin` also manages its tenant's tokens and quota;
- the platform admin does all of that in every tenant, and manages tenants and the outbox.

A principal never learns anything about a tenant it has no role in: the API answers as if
the tenant did not exist (404), whatever exists there (`can_see_tenant`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """A role in one tenant, ordered: each includes the rights of the ones before it."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.VIEWER: 1, Role.EDITOR: 2, Role.ADMIN: 3}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `tenant` and `role` are None for the platform admin.

    `token_id` is the public id of the token used (for audit and revocation), never the
    secret.
    """

    name: str
    tenant: str | None = None
    role: Role | None = None
    platform_admin: bool = False
    token_id: str | None = None

    def __post_init__(self) -> None:
        if self.platform_admin == (self.role is not None):
            raise ValueError("a principal is either a platform admin or has one tenant role")
        if (self.tenant is None) != (self.role is None):
            raise ValueError("a tenant role needs both a tenant and a role")

    @property
    def audit_name(self) -> str:
        """How the audit trail names this caller: `NAME` plus its token id."""
        return f"{self.name} (token {self.token_id})" if self.token_id else self.name

    def can_see_tenant(self, tenant: str) -> bool:
        """Whether `tenant` exists for this caller at all (otherwise: 404, reveal nothing)."""
        return self.platform_admin or self.tenant == tenant

    def has_role(self, tenant: str, needed: Role) -> bool:
        """Whether this caller holds `needed` (or a higher role) in `tenant`."""
        if self.platform_admin:
            return True
        return self.tenant == tenant and self.role is not None and self.role.rank >= needed.rank


SYSTEM = "system"

"""API tokens: issue, authenticate, list, revoke (architecture/api-compatibility.md, tenancy and
RBAC).

A token is `aos_` followed by 256 random bits (`secrets.token_urlsafe(32)`). Only its SHA-256
is stored. A fast, unsalted hash is the right tool here, unlike for passwords: slow salted
hashes (bcrypt, scrypt, Argon2) exist because passwords are guessable, and a salt stops
precomputed tables; a 256-bit random secret cannot be guessed or precomputed whatever the
hash speed, and an unsalted digest lets the token be found by one indexed lookup instead of
hashing against every stored salt. A stolen table therefore yields no usable token. This is
the scheme of GitHub's and PyPI's API tokens.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.access import Role
from controlplane.domain.agents.model import DNS1123_LABEL
from controlplane.domain.errors import (
    FieldError,
    TokenNotFound,
    Unauthenticated,
    ValidationFailed,
)
from controlplane.domain.events.envelope import rfc3339, utcnow
from controlplane.domain.records import TokenRecord

PREFIX = "aos_"


def token_hash(token: str) -> str:
    """The stored form of a token: the hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """A new token: `token` is the secret, shown once; `record` is what is kept."""

    token: str
    record: TokenRecord


async def create_token(
    uow: UnitOfWork,
    principal: str,
    *,
    tenant: str | None = None,
    role: Role | str | None = None,
    platform_admin: bool = False,
    created_by: str = "system",
    ttl_s: float | None = None,
) -> IssuedToken:
    """Issue a token for `principal`: `role` in `tenant`, or a platform admin's. Commits,
    with an audit entry. `ttl_s` None: the token does not expire.

    Raises ValidationFailed (a bad principal, tenant or role; both or neither of a tenant
    role and platform admin).
    """
    problems: list[FieldError] = []
    if not principal or len(principal) > 128 or not re.fullmatch(r"[\w.@:+-]+", principal):
        problems.append(FieldError("/principal", "1-128 of letters, digits and _.@:+-"))
    if platform_admin:
        if tenant is not None or role is not None:
            problems.append(FieldError("/role", "a platform admin has no tenant role"))
    else:
        if tenant is None or not re.fullmatch(DNS1123_LABEL, tenant) or len(tenant) > 63:
            problems.append(FieldError("/tenant", "a tenant name (DNS-1123 label) is required"))
        if role not in tuple(Role):
            problems.append(FieldError("/role", "one of viewer, editor, admin"))
    if ttl_s is not None and ttl_s <= 0:
        problems.append(FieldError("/ttlSeconds", "must be positive"))
    if problems:
        detail = "; ".join(f"{p.pointer}: {p.message}" for p in problems)
        raise ValidationFailed(f"invalid token request: {detail}", errors=problems)
    now = utcnow()
    token = PREFIX + secrets.token_urlsafe(32)
    record = TokenRecord(
        id=secrets.token_hex(8),
        principal=principal,
        tenant=tenant,
        role=Role(role) if role is not None else None,
        platform_admin=platform_admin,
        created_at=now,
        created_by=created_by,
        expires_at=now + timedelta(seconds=ttl_s) if ttl_s is not None else None,
        revoked_at=None,
    )
    await uow.tokens.add(record, token_hash(token))
    await uow.audit.record(
        "token.create",
        f"tokens/{record.id}",
        tenant=tenant,
        details={
            "principal": principal,
            "role": str(role) if role else None,
            "platform_admin": platform_admin,
        },
    )
    await uow.commit()
    return IssuedToken(token, record)


async def authenticate(uow: UnitOfWork, token: str | None) -> TokenRecord:
    """The record of an active token (`record.as_principal()` is the caller). Raises
    Unauthenticated (no token, unknown, revoked or expired — one answer for all, so nothing
    is learnt about which)."""
    if not token or not token.startswith(PREFIX) or len(token) > 200:
        raise Unauthenticated("a valid bearer token is required")
    record = await uow.tokens.active_by_hash(token_hash(token), utcnow())
    if record is None:
        raise Unauthenticated("a valid bearer token is required")
    return record


async def list_tokens(uow: UnitOfWork, tenant: str | None) -> list[TokenRecord]:
    """Tokens of `tenant`, or the platform admins' when None (secrets are never kept)."""
    if tenant is None:
        return await uow.tokens.list(None, platform_admins=True)
    return await uow.tokens.list(tenant)


async def revoke_token(uow: UnitOfWork, token_id: str, *, tenant: str | None = None) -> TokenRecord:
    """Revoke a token (idempotent: revoking a revoked token succeeds). With `tenant`, only a
    token of that tenant. Commits, with an audit entry. Raises TokenNotFound."""
    record = await uow.tokens.find(token_id)
    if record is None or (tenant is not None and record.tenant != tenant):
        raise TokenNotFound(f"token {token_id!r} not found")
    now = utcnow()
    if await uow.tokens.revoke(token_id, now):
        await uow.audit.record("token.revoke", f"tokens/{token_id}", tenant=record.tenant)
        record = TokenRecord(**{**record.__dict__, "revoked_at": now})
    await uow.commit()
    return record


async def needs_first_admin(uow: UnitOfWork) -> bool:
    """Whether no platform-admin token is active (a fresh installation)."""
    return not await uow.tokens.any_platform_admin(utcnow())


def token_view(record: TokenRecord, secret: str | None = None) -> dict[str, Any]:
    """The JSON view of a token (camelCase; the secret only when just issued, never again)."""
    view: dict[str, Any] = {
        "id": record.id,
        "principal": record.principal,
        "tenant": record.tenant,
        "role": str(record.role) if record.role else None,
        "platformAdmin": record.platform_admin,
        "createdAt": rfc3339(record.created_at),
        "createdBy": record.created_by,
        "expiresAt": rfc3339(record.expires_at) if record.expires_at else None,
        "revokedAt": rfc3339(record.revoked_at) if record.revoked_at else None,
    }
    if secret is not None:
        view["token"] = secret
    return view

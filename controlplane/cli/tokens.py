"""`agentos token create|list|revoke`: API tokens, administered on the database.

These work directly on `AGENTOS_DATABASE_URL`, as `agentos db upgrade` does: whoever can
reach the database already holds every right, and the first platform-admin token can only
be made this way (`agentos serve` says so at start while none exists). Tenant admins manage
their tenant's tokens through the API (`/api/v1/tenants/{tenant}/tokens`).
"""

from __future__ import annotations

import asyncio
import getpass
import json
from typing import Any

import typer

token_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)


def _run(fn: Any) -> Any:
    from controlplane.bootstrap import Container
    from controlplane.config import get_settings

    async def main() -> Any:
        container = Container(get_settings())
        try:
            async with container.uow(f"cli:{getpass.getuser()}") as uow:
                return await fn(uow)
        finally:
            await container.close()

    return asyncio.run(main())


@token_app.command("create")
def create(
    principal: str = typer.Option(..., "--principal", help="Who the token is for."),
    tenant: str | None = typer.Option(None, "--tenant", help="The tenant of the role."),
    role: str | None = typer.Option(None, "--role", help="viewer | editor | admin"),
    platform_admin: bool = typer.Option(
        False, "--platform-admin", help="A platform admin's token (all tenants, the outbox)."
    ),
    ttl_s: float | None = typer.Option(None, "--ttl", help="Expire after SECONDS."),
) -> None:
    """Issue a token and print it (once: only its hash is kept). The token alone goes to
    stdout, so `export AGENTOS_TOKEN=$(agentos token create ...)` works."""
    from controlplane.domain.errors import ValidationFailed
    from controlplane.service.tokens import create_token

    try:
        issued = _run(
            lambda uow: create_token(
                uow,
                principal,
                tenant=tenant,
                role=role,
                platform_admin=platform_admin,
                created_by=f"cli:{getpass.getuser()}",
                ttl_s=ttl_s,
            )
        )
    except ValidationFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    r = issued.record
    grant = "platform admin" if r.platform_admin else f"{r.role} in tenant {r.tenant}"
    typer.echo(f"token {r.id} for {r.principal}: {grant}", err=True)
    typer.echo(issued.token)


@token_app.command("list")
def list_(
    tenant: str | None = typer.Option(None, "--tenant", help="Tokens of this tenant."),
    output: str = typer.Option("text", "-o", "--output", help="text | json"),
) -> None:
    """Tokens of a tenant, or the platform admins' without --tenant (never the secrets)."""
    from controlplane.service.tokens import list_tokens, token_view

    records = _run(lambda uow: list_tokens(uow, tenant))
    views = [token_view(r) for r in records]
    if output == "json":
        typer.echo(json.dumps(views))
        return
    typer.echo(f"{'ID':<18} {'PRINCIPAL':<20} {'TENANT':<16} {'ROLE':<8} REVOKED")
    for v in views:
        role = "platform" if v["platformAdmin"] else v["role"]
        typer.echo(
            f"{v['id']:<18} {v['principal']:<20} {v['tenant'] or '-':<16} {role:<8} "
            f"{v['revokedAt'] or '-'}"
        )


@token_app.command("revoke")
def revoke(token_id: str = typer.Argument(..., help="The token's id (not its secret).")) -> None:
    """Revoke a token. A running server stops accepting it within AGENTOS_AUTH_CACHE_TTL_S
    (default 5 s)."""
    from controlplane.domain.errors import TokenNotFound
    from controlplane.service.tokens import revoke_token

    try:
        _run(lambda uow: revoke_token(uow, token_id))
    except TokenNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"token {token_id} revoked")

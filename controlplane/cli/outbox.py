"""`agentos relay`, `agentos db upgrade` and `agentos outbox ...` (adr/0003-outbox-relay-design.md,
architecture/api-compatibility.md).

These administer the outbox directly on the database named by `AGENTOS_DATABASE_URL`.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import typer

outbox_app = typer.Typer(
    help="Inspect the outbox, replay events, manage dead letters.", no_args_is_help=True
)
dlq_app = typer.Typer(help="Dead letters: list and requeue.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
outbox_app.add_typer(dlq_app, name="dlq")


def _container() -> Any:
    from controlplane.bootstrap import Container
    from controlplane.config import get_settings

    return Container(get_settings())


def _run(coro_fn: Any) -> Any:
    async def main() -> Any:
        container = _container()
        try:
            return await coro_fn(container)
        finally:
            await container.close()

    return asyncio.run(main())


def _fail(message: str) -> typer.Exit:
    """Print `error: MESSAGE` on stderr; the Exit (status 2) for the caller to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the database to the latest schema (or REVISION)."""
    from controlplane.config import get_settings
    from controlplane.data import migrate

    migrate.upgrade(get_settings().database_url, revision)
    typer.echo(f"database at revision {revision}")


@outbox_app.command("status")
def outbox_status(
    output: str = typer.Option("text", "-o", "--output", help="text | json"),
) -> None:
    """Events per state, and the age of the oldest unpublished one."""
    from controlplane.data.outbox.admin import OutboxAdmin

    status = _run(lambda c: OutboxAdmin(c.engine).status())
    if output == "json":
        typer.echo(
            json.dumps(
                {
                    "counts": status.counts,
                    "oldest_unpublished_age_s": status.oldest_unpublished_age_s,
                    "dead_letters_open": status.dead_letters_open,
                }
            )
        )
        return
    for state, count in status.counts.items():
        typer.echo(f"{state:<14} {count}")
    age = status.oldest_unpublished_age_s
    typer.echo(f"oldest unpublished: {'none' if age is None else f'{age:.1f}s'}")
    typer.echo(f"open dead letters: {status.dead_letters_open}")


@outbox_app.command("replay")
def outbox_replay(
    from_id: str | None = typer.Option(None, "--from-id", help="This event and every later one."),
    since: datetime | None = typer.Option(None, "--since", help="Events at or after TIME (ISO)."),
    aggregate: str | None = typer.Option(None, "--aggregate", help="TYPE/ID or ID."),
) -> None:
    """Publish already published events again; they keep their event_id."""
    from controlplane.data.outbox.admin import OutboxAdmin
    from controlplane.domain.errors import AgentOSError

    if sum(x is not None for x in (from_id, since, aggregate)) != 1:
        raise _fail("give exactly one of --from-id, --since, --aggregate")
    try:
        n = _run(
            lambda c: OutboxAdmin(c.engine).replay(
                from_id=from_id, since=since, aggregate=aggregate
            )
        )
    except AgentOSError as exc:
        raise _fail(exc.detail) from exc
    typer.echo(f"{n} events queued for replay")


@dlq_app.command("list")
def dlq_list(output: str = typer.Option("text", "-o", "--output", help="text | json")) -> None:
    """Dead-lettered events not yet requeued."""
    from controlplane.data.outbox.admin import OutboxAdmin

    letters = _run(lambda c: OutboxAdmin(c.engine).dead_letters())
    if output == "json":
        typer.echo(json.dumps(letters, default=str))
        return
    typer.echo(f"{'EVENT ID':<36}  {'TYPE':<24} {'SOURCE':<20} {'ATTEMPTS':>8}  REASON")
    for d in letters:
        typer.echo(
            f"{d['event_id']:<36}  {d['envelope']['event_type']:<24} {d['source']:<20} "
            f"{d['attempts']:>8}  {d['reason']}"
        )


@dlq_app.command("requeue")
def dlq_requeue(
    event_id: str | None = typer.Argument(None, help="The event to requeue."),
    all_: bool = typer.Option(False, "--all", help="Requeue every open dead letter."),
) -> None:
    """Send dead-lettered events again (same event_id)."""
    from controlplane.data.outbox.admin import OutboxAdmin
    from controlplane.domain.errors import AgentOSError

    if (event_id is None) == (not all_):
        raise _fail("give an EVENT_ID or --all")
    try:
        n = _run(lambda c: OutboxAdmin(c.engine).requeue(event_id))
    except AgentOSError as exc:
        raise _fail(exc.detail) from exc
    typer.echo(f"{n} dead letters requeued")


def relay() -> None:
    """Run the outbox relay: committed events → NATS JetStream (AGENTOS_NATS_URL)."""
    from controlplane.config import get_settings
    from controlplane.entrypoints import relay as relay_process

    try:
        relay_process.main(get_settings())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    """Add these commands to the `agentos` app."""
    app.command("relay")(relay)
    app.add_typer(db_app, name="db")
    app.add_typer(outbox_app, name="outbox")

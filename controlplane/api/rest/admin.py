"""`/api/v1/admin/outbox`: outbox status, replay and dead letters
(adr/0003-outbox-relay-design.md), for platform
admins only — the same operations as `agentos outbox ...`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from controlplane.api.errors import responses
from controlplane.api.rest.models import (
    CountOut,
    DeadLetterList,
    OutboxStatusOut,
    ReplayIn,
)
from controlplane.api.security import platform_admin
from controlplane.data.outbox.admin import OutboxAdmin
from controlplane.domain.events.envelope import as_utc, rfc3339

router = APIRouter(
    prefix="/api/v1/admin/outbox",
    tags=["admin"],
    dependencies=[Depends(platform_admin)],
)


def _admin(request: Request) -> OutboxAdmin:
    return OutboxAdmin(request.app.state.container.engine)


@router.get(
    "/status",
    response_model=None,
    responses={
        200: {"description": "Outbox status", "model": OutboxStatusOut},
        **responses("PERMISSION_DENIED"),
    },
)
async def outbox_status(request: Request) -> Any:
    """Events per state, the age of the oldest unpublished one, open dead letters."""
    status = await _admin(request).status()
    return {
        "counts": status.counts,
        "oldestUnpublishedAgeSeconds": status.oldest_unpublished_age_s,
        "deadLettersOpen": status.dead_letters_open,
    }


@router.post(
    "/replay",
    response_model=None,
    responses={
        200: {"description": "How many events were queued again", "model": CountOut},
        **responses("PERMISSION_DENIED", "NOT_FOUND"),
    },
)
async def outbox_replay(body: ReplayIn, request: Request) -> Any:
    """Publish already published events again (they keep their event_id). Exactly one of
    `fromEventId`, `since` (RFC 3339), `aggregate` (`TYPE/ID` or `ID`)."""
    since = as_utc(body.since) if body.since is not None else None
    n = await _admin(request).replay(
        from_id=body.fromEventId, since=since, aggregate=body.aggregate
    )
    return {"count": n}


@router.get(
    "/dead-letters",
    response_model=None,
    responses={
        200: {"description": "Dead letters, oldest first", "model": DeadLetterList},
        **responses("PERMISSION_DENIED"),
    },
)
async def dead_letters(
    request: Request,
    include_requeued: Annotated[bool, Query(alias="includeRequeued")] = False,
) -> Any:
    """Dead-lettered events (open ones; with `includeRequeued`, requeued ones too)."""
    letters = await _admin(request).dead_letters(include_requeued=include_requeued)
    return {
        "items": [
            {
                "eventId": d["event_id"],
                "source": d["source"],
                "reason": d["reason"],
                "attempts": d["attempts"],
                "deadAt": rfc3339(as_utc(d["dead_at"])),
                "requeuedAt": rfc3339(as_utc(d["requeued_at"])) if d["requeued_at"] else None,
                "envelope": d["envelope"],
            }
            for d in letters
        ]
    }


@router.post(
    "/dead-letters/{event_id}/requeue",
    response_model=None,
    responses={
        200: {"description": "Requeued", "model": CountOut},
        **responses("PERMISSION_DENIED", "NOT_FOUND"),
    },
)
async def requeue_one(
    event_id: Annotated[str, Path(min_length=1, max_length=64)], request: Request
) -> Any:
    """Put one dead-lettered event back in the outbox (same event_id)."""
    return {"count": await _admin(request).requeue(event_id)}


@router.post(
    "/dead-letters/requeue",
    response_model=None,
    responses={
        200: {"description": "How many were requeued", "model": CountOut},
        **responses("PERMISSION_DENIED"),
    },
)
async def requeue_all(request: Request) -> Any:
    """Put every open dead letter back in the outbox."""
    return {"count": await _admin(request).requeue(None)}

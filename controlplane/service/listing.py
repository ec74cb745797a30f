"""Lists and watches of agents (Kubernetes API conventions: `limit` + `continue`,
`labelSelector`, `watch` resumable from a `resourceVersion`).

Two versions, as in Kubernetes but not the same number here:
- an object's `metadata.resourceVersion` is its own write counter, for optimistic
  concurrency (If-Match);
- a list's `metadata.resourceVersion` and a watch event's `resourceVersion` are positions in
  the outbox, the change feed (controlplane/data/outbox/change_feed.py). Watching from a list's
  resourceVersion, or resuming from the last event's, misses no change.

A watch event has Kubernetes' shape, `type` (ADDED, MODIFIED, DELETED, or BOOKMARK with only
a resourceVersion) and `object`, plus the outbox `event` that caused it. `object` is the
agent as it is when the event is sent (level-triggered, as an informer sees it after a
relist): several quick changes may show the same object; a DELETED event's object keeps
only name, namespace and uid, as does any event of an agent deleted since (every event is
sent; a label selector is applied to the agent as it is, so events of a deleted agent pass).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.data.outbox.change_feed import FeedEvent, OutboxFeed
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.model import API_VERSION, KIND
from controlplane.domain.errors import BadRequest
from controlplane.domain.events.envelope import rfc3339
from controlplane.domain.records import AgentRecord
from controlplane.domain.selectors import Requirement, matches

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
BOOKMARK_EVERY_S = 10.0


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


def encode_continue(after: str) -> str:
    """An opaque continue token: resume after the name `after`."""
    raw = json.dumps({"v": 1, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str | None) -> str | None:
    """The name a continue token resumes after. Raises BadRequest for a token this API did
    not issue."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        after = data["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise BadRequest("continue: not a token issued by this API") from None
    if not isinstance(after, str) or data.get("v") != 1:
        raise BadRequest("continue: not a token issued by this API")
    return after


def parse_resource_version(value: str | None) -> int | None:
    """A list/watch resourceVersion (a non-negative integer). Raises BadRequest."""
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise BadRequest(f"resourceVersion: {value!r} is not a resourceVersion of this API")
    return int(value)


@dataclass(frozen=True)
class AgentPage:
    """One page: agents, the token for the next page (None on the last page), and the
    feed position to watch from."""

    items: list[AgentRecord]
    continue_token: str | None
    resource_version: int


async def list_agents(
    uow_factory: UnitOfWorkFactory,
    feed: OutboxFeed,
    tenant: str,
    *,
    limit: int = DEFAULT_LIMIT,
    continue_token: str | None = None,
    requirements: Sequence[Requirement] = (),
) -> AgentPage:
    """A page of the agents of `tenant` that match `requirements`, by name.

    Pages are keyset pages: an agent present for the whole pagination is listed exactly
    once; one created or deleted meanwhile may or may not be. Raises BadRequest.
    """
    after = decode_continue(continue_token)
    horizon = await feed.current_horizon()  # before the read: the list reflects at least it
    async with uow_factory() as uow:
        items = await uow.agents.page(
            tenant, after=after, limit=limit + 1, requirements=requirements
        )
    more = len(items) > limit
    items = items[:limit]
    return AgentPage(items, encode_continue(items[-1].name) if more else None, horizon)


@dataclass(frozen=True)
class WatchEvent:
    """`type` ADDED | MODIFIED | DELETED | BOOKMARK; `resource_version` is the feed position
    to resume after; `event` is the outbox event (None for initial ADDED and BOOKMARK)."""

    type: str
    resource_version: int
    object: dict[str, Any] | None
    event: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "resourceVersion": str(self.resource_version),
            "object": self.object,
            "event": self.event,
        }


_TYPES = {"agent.created": "ADDED", "agent.deleted": "DELETED"}


def _gone_object(tenant: str, event: FeedEvent) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": event.payload.get("name"),
            "namespace": tenant,
            "uid": event.aggregate_id,
        },
    }


def _event_summary(e: FeedEvent) -> dict[str, Any]:
    return {
        "event_id": e.event_id,
        "event_type": e.event_type,
        "sequence": e.sequence,
        "occurred_at": rfc3339(e.occurred_at),
        "payload": e.payload,
    }


async def watch_agents(
    uow_factory: UnitOfWorkFactory,
    feed: OutboxFeed,
    tenant: str,
    *,
    since: int | None,
    requirements: Sequence[Requirement] = (),
    timeout_s: float,
    poll_interval_s: float = 0.2,
) -> AsyncIterator[WatchEvent]:
    """Changes to the agents of `tenant` after feed position `since`, until `timeout_s`.

    With `since` None: first an ADDED event for every current agent (then the changes after
    the list), as a Kubernetes watch without resourceVersion. A BOOKMARK is sent when the
    position moved without a matching event for BOOKMARK_EVERY_S, so a client resumes close
    to where it was.
    """
    deadline = time.monotonic() + timeout_s
    if since is None:
        page = await list_agents(
            uow_factory, feed, tenant, limit=MAX_LIMIT, requirements=requirements
        )
        cursor = page.resource_version
        while True:
            for record in page.items:
                yield WatchEvent("ADDED", cursor, record.to_manifest())
            if page.continue_token is None:
                break
            page = await list_agents(
                uow_factory,
                feed,
                tenant,
                limit=MAX_LIMIT,
                continue_token=page.continue_token,
                requirements=requirements,
            )
    else:
        cursor = since
    sent_at = time.monotonic()
    bookmarked = cursor
    while time.monotonic() < deadline:
        horizon = await feed.horizon(cursor)
        while cursor < horizon:
            events = await feed.read(cursor, horizon, tenant=tenant, aggregate_type="agent")
            if not events:
                cursor = horizon
                break
            async with uow_factory() as uow:
                current = await uow.agents.by_ids({e.aggregate_id for e in events})
            for e in events:
                found = current.get(e.aggregate_id)
                if found is not None and not matches(requirements, found.labels):
                    continue
                kind = _TYPES.get(e.event_type, "MODIFIED")
                obj = (
                    found.to_manifest()
                    if found is not None and kind != "DELETED"
                    else _gone_object(tenant, e)
                )
                yield WatchEvent(kind, e.id, obj, _event_summary(e))
                sent_at = time.monotonic()
                bookmarked = e.id
            cursor = events[-1].id if len(events) >= 1000 else horizon
        now = time.monotonic()
        if cursor != bookmarked and now - sent_at >= BOOKMARK_EVERY_S:
            yield WatchEvent("BOOKMARK", cursor, None)
            sent_at, bookmarked = now, cursor
        await asyncio.sleep(min(poll_interval_s, max(0.0, deadline - time.monotonic())))
    if cursor != bookmarked:
        yield WatchEvent("BOOKMARK", cursor, None)

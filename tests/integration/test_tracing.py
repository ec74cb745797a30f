"""One trace from the API request to the consumer, across the outbox and NATS
(architecture/slos.md):
request span (FastAPI's) → UnitOfWork span → service span ⇢ (traceparent stored with the
outbox row) ⇢ relay publish span ⇢ (traceparent header on the NATS message) ⇢ consumer span.

Real PostgreSQL, a private nats-server (the shared one is others' to reset), the SDK's
in-memory exporter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.api.app import create_app
from controlplane.bootstrap import Container
from controlplane.config import Settings
from controlplane.data.tables import outbox
from controlplane.domain.events.envelope import EventEnvelope, OutboxState
from controlplane.messaging.consumer import EventConsumer
from controlplane.messaging.relay import Relay, RelayConfig
from controlplane.observability.tracing import configure_tracing
from controlplane.service.tokens import create_token
from harness.nats import PrivateNats
from harness.waiting import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
MANIFEST = {
    "apiVersion": "agentos.io/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "traced"},
    "spec": {"image": "local/none", "runtime": {"class": "process"}, "command": ["true"]},
}


@pytest.fixture(scope="session")
def span_exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing("agentos-test").add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # keeps no more spans for the rest of the session


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    span_exporter.clear()
    return span_exporter


@pytest.fixture
async def private_nc(private_nats: PrivateNats) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(private_nats.url)
    try:
        yield client
    finally:
        await client.close()


def one(spans: list[ReadableSpan], what: str, **match: object) -> ReadableSpan:
    """The single span with these attributes (`trace_id`/`span_id` are its context's)."""

    def get(span: ReadableSpan, key: str) -> object:
        return getattr(span.context, key) if key in ("trace_id", "span_id") else getattr(span, key)

    found = [s for s in spans if all(get(s, k) == v for k, v in match.items())]
    assert len(found) == 1, f"{what}: {len(found)} spans match {match}: {[s.name for s in spans]}"
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def ancestors(span: ReadableSpan, spans: list[ReadableSpan]) -> list[int]:
    """Span ids from `span`'s parent up to the root (FastAPI puts its own operation spans,
    such as `fastapi.endpoint`, between the request and the handler's work)."""
    by_id = {s.context.span_id: s for s in spans}
    chain: list[int] = []
    parent = parent_of(span)
    while parent is not None:
        chain.append(parent)
        parent = parent_of(by_id[parent]) if parent in by_id else None
    return chain


async def test_a_request_is_one_trace_through_the_outbox_relay_and_consumer(
    spans: InMemorySpanExporter,
    pg_url: str,
    pg_engine: AsyncEngine,
    private_nc: nats.NATS,
    tmp_path: Path,
) -> None:
    # 1. The API request, continuing the caller's trace (W3C traceparent header).
    container = Container(Settings(database_url=pg_url, state_dir=tmp_path / "state"))
    async with container.uow() as uow:
        admin = await create_token(uow, "root", platform_admin=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(container)),
        base_url="http://test",
        headers={"Authorization": f"Bearer {admin.token}"},
    ) as client:
        answer = await client.put(
            "/api/v1/tenants/team-t/agents/traced",
            json=MANIFEST,
            headers={"traceparent": f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"},
        )
    await container.close()
    assert answer.status_code == 201, answer.text
    agent_id = answer.json()["metadata"]["uid"]

    async with pg_engine.connect() as conn:
        row = (
            await conn.execute(
                select(outbox.c.event_id, outbox.c.trace_id, outbox.c.traceparent).where(
                    outbox.c.agent_id == agent_id, outbox.c.event_type == "agent.created"
                )
            )
        ).one()
    assert row.trace_id == CALLER_TRACE_ID, "the event's trace_id is the request's trace"
    assert row.traceparent and row.traceparent.startswith(f"00-{CALLER_TRACE_ID}-")

    # 2. The relay publishes it; 3. a consumer handles it.
    relay = Relay(pg_engine, pg_url, private_nc, RelayConfig(poll_interval_s=0.1))
    await relay.setup()

    async def published() -> bool:
        await relay.run_once()
        async with pg_engine.connect() as conn:
            state = await conn.scalar(
                select(outbox.c.state).where(outbox.c.event_id == row.event_id)
            )
        return state == OutboxState.PUBLISHED

    await eventually(published, 30, "agent.created published")

    handled: dict[str, str] = {}

    async def handler(envelope: EventEnvelope, conn: AsyncConnection) -> None:
        ctx = trace.get_current_span().get_span_context()
        handled[envelope.event_id] = format(ctx.trace_id, "032x")

    stop = asyncio.Event()
    consumer = EventConsumer(private_nc, pg_engine, "tracing-test", handler)
    task = asyncio.create_task(consumer.run(stop))
    try:

        async def consumed() -> bool:
            return row.event_id in handled

        await eventually(consumed, 30, "agent.created consumed")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert handled[row.event_id] == CALLER_TRACE_ID, "the handler runs inside the trace"

    # The chain, parent by parent.
    finished = list(spans.get_finished_spans())
    request = one(
        finished,
        "request",
        kind=SpanKind.SERVER,
        name="PUT /api/v1/tenants/{tenant}/agents/{name}",
        trace_id=int(CALLER_TRACE_ID, 16),
    )
    assert parent_of(request) == int(CALLER_SPAN_ID, 16), "continues the caller's span"
    service = one(
        finished, "service", name="service.apply_agent", trace_id=int(CALLER_TRACE_ID, 16)
    )
    uow = one(finished, "unit of work", span_id=parent_of(service))
    assert uow.name == "uow", "the service runs in the UnitOfWork's span"
    assert request.context.span_id in ancestors(uow, finished), "the uow runs in the request"
    assert row.traceparent == (
        f"00-{CALLER_TRACE_ID}-{format(service.context.span_id, '016x')}-01"
    ), "the outbox row stores the service span's context"
    publishes = [
        s
        for s in finished
        if s.kind is SpanKind.PRODUCER and s.attributes["messaging.message.id"] == row.event_id
    ]
    assert len(publishes) == 1
    publish = publishes[0]
    assert parent_of(publish) == service.context.span_id, "publish continues the stored context"
    consumes = [
        s
        for s in finished
        if s.kind is SpanKind.CONSUMER and s.attributes.get("messaging.message.id") == row.event_id
    ]
    assert len(consumes) == 1
    assert parent_of(consumes[0]) == publish.context.span_id, "consume continues the header"
    chain = [request, uow, service, publish, consumes[0]]
    assert {format(s.context.trace_id, "032x") for s in chain} == {CALLER_TRACE_ID}

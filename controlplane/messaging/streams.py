"""JetStream adapter: connection, declarative stream setup, subjects and publishing.

Streams (adr/0003-outbox-relay-design.md): `AGENTOS_EVENTS` on
`agentos.events.<tenant>.<aggregate_type>.<event_type>`
and `AGENTOS_DLQ` on `agentos.dlq.>`. Setup is idempotent: a stream is created when missing
and updated to the declared configuration otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Protocol

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from controlplane.domain.events.envelope import EventEnvelope

EVENTS_STREAM = "AGENTOS_EVENTS"
DLQ_STREAM = "AGENTOS_DLQ"
RUNS_STREAM = "AGENTOS_RUNS"
EVENTS_SUBJECT_PREFIX = "agentos.events"
DLQ_SUBJECT_PREFIX = "agentos.dlq"
RUNS_SUBJECT_PREFIX = "agentos.runs"
# The outbox event that is a run's queue message, not an event (architecture/runs.md).
RUN_DISPATCH = "run.dispatch"
DUPLICATE_WINDOW_S = 120.0


class Routable(Protocol):
    """What routes an event: an EventEnvelope, or an outbox row as the relay reads it."""

    @property
    def event_type(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def aggregate_type(self) -> str: ...
    @property
    def agent_id(self) -> str | None: ...


def run_subject(tenant: str, agent_id: str) -> str:
    """`agentos.runs.<tenant>.<agent uid>`: the queue of one agent's runs."""
    return f"{RUNS_SUBJECT_PREFIX}.{tenant}.{agent_id}"


def event_subject(envelope: Routable, prefix: str = EVENTS_SUBJECT_PREFIX) -> str:
    """Where the relay publishes `envelope`: a run's dispatch message on its agent's queue
    (`run_subject`), every other event on `<prefix>.<tenant>.<aggregate_type>.<event_type>`."""
    if envelope.event_type == RUN_DISPATCH and prefix == EVENTS_SUBJECT_PREFIX:
        assert envelope.agent_id is not None, "a run.dispatch names its agent"
        return run_subject(envelope.tenant_id, envelope.agent_id)
    return f"{prefix}.{envelope.tenant_id}.{envelope.aggregate_type}.{envelope.event_type}"


def event_stream(envelope: Routable) -> str:
    """The stream `event_subject(envelope)` belongs to."""
    return RUNS_STREAM if envelope.event_type == RUN_DISPATCH else EVENTS_STREAM


def stream_configs(duplicate_window_s: float = DUPLICATE_WINDOW_S) -> list[StreamConfig]:
    """The declared streams."""
    return [
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=[f"{EVENTS_SUBJECT_PREFIX}.>"],
            duplicate_window=duplicate_window_s,
            max_age=7 * 24 * 3600.0,
        ),
        # Work-queue retention: a run's message is gone once its agent's consumer acks it;
        # each agent's consumer filters its own subject, so no two consumers overlap.
        StreamConfig(
            name=RUNS_STREAM,
            subjects=[f"{RUNS_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=duplicate_window_s,
            max_age=30 * 24 * 3600.0,
        ),
        StreamConfig(
            name=DLQ_STREAM,
            subjects=[f"{DLQ_SUBJECT_PREFIX}.>"],
            duplicate_window=duplicate_window_s,
            max_age=30 * 24 * 3600.0,
        ),
    ]


async def ensure_streams(
    js: JetStreamContext, duplicate_window_s: float = DUPLICATE_WINDOW_S
) -> None:
    """Create or update the declared streams (idempotent)."""
    for config in stream_configs(duplicate_window_s):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config=config)
        else:
            await js.update_stream(config=config)


async def connect(url: str, *, name: str, connect_timeout_s: float = 5.0) -> NATS:
    """Connect to NATS, reconnecting forever in the background after a first success."""
    return await nats.connect(
        url,
        name=name,
        connect_timeout=connect_timeout_s,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        allow_reconnect=True,
    )


@dataclass(frozen=True)
class PublishResult:
    """JetStream's answer: the stream sequence, and whether it was a duplicate by msg id."""

    stream_sequence: int
    duplicate: bool


async def publish(
    js: JetStreamContext,
    subject: str,
    data: bytes,
    *,
    msg_id: str,
    headers: dict[str, str] | None = None,
    timeout_s: float,
    stream: str | None = None,
) -> PublishResult:
    """Publish with `Nats-Msg-Id = msg_id` and wait for the ack at most `timeout_s`.

    `publish_async` futures have no deadline of their own, so the wait (for a pending slot
    and for the ack) is bounded here, by one `asyncio.timeout`: on Python 3.11 each
    `asyncio.wait_for` (and `wait_stall`) costs a Task per call. Raises TimeoutError or a
    nats error.
    """
    hdrs = {"Nats-Msg-Id": msg_id, **(headers or {})}
    async with asyncio.timeout(timeout_s):
        future = await js.publish_async(subject, data, headers=hdrs, stream=stream)
        ack = await future
    return PublishResult(ack.seq, bool(ack.duplicate))


async def publish_dead_letter(
    js: JetStreamContext,
    envelope: EventEnvelope,
    *,
    reason: str,
    source: str,
    msg_id: str,
    timeout_s: float,
) -> None:
    """Copy a dead-lettered event to `AGENTOS_DLQ` (`agentos.dlq.<tenant>.<type>.<event>`) as
    `{"reason", "source", "envelope"}`. Best effort: the `dead_letters` table is the record, so
    a failure here is swallowed."""
    body = {"reason": reason, "source": source, "envelope": envelope.to_dict()}
    with contextlib.suppress(Exception):
        await publish(
            js,
            event_subject(envelope, DLQ_SUBJECT_PREFIX),
            json.dumps(body).encode(),
            msg_id=msg_id,
            timeout_s=timeout_s,
        )

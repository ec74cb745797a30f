"""The per-agent run queues on JetStream (architecture/runs.md): one durable pull consumer
per agent on stream `AGENTOS_RUNS`, the pull of one delivery, and the acknowledgements sent
to a delivery's stored ack subject (so any process may ack, extend, redeliver or end it).

JetStream's ack protocol (nats-server, "consumer acknowledgement"): `+ACK` done, `+WPI` in
progress (restarts the ack wait), `-NAK` redeliver (optionally `{"delay": ns}`), `+TERM` never
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from controlplane.domain.agents.model import RunsSpec
from controlplane.messaging.streams import RUNS_STREAM, ensure_streams, run_subject

CONSUMER_PREFIX = "run-"
CONSUMER_LIST_PAGE = 256  # consumers per $JS.API.CONSUMER.LIST answer (nats-server)


def consumer_name(agent_id: str) -> str:
    """The durable consumer of an agent's queue: `run-<agent uid>`."""
    return f"{CONSUMER_PREFIX}{agent_id}"


@dataclass(frozen=True)
class Delivery:
    """One delivery of a run's dispatch message: the run id it names, the ack subject, the
    stream sequence of the message and how many times it has been delivered (1-based)."""

    run_id: str
    reply: str
    stream_seq: int
    num_delivered: int
    traceparent: str | None = None


class RunQueues:
    """The run queues of one NATS connection. `ack_wait_s`: how long a delivery stays with
    its holder without a heartbeat before JetStream delivers it again. `owner`: the
    installation's mark, kept as each consumer's description, so that installations sharing
    one NATS list (and sweep) only their own consumers."""

    def __init__(self, nc: NATS, *, ack_wait_s: float = 30.0, owner: str = "") -> None:
        self._nc = nc
        self.description = f"agentos runs of {owner}" if owner else "agentos runs"
        self._js: JetStreamContext = nc.jetstream()
        self.ack_wait_s = ack_wait_s
        self._subs: dict[str, object] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._known: dict[str, tuple[str, int, int]] = {}

    async def setup(self) -> None:
        """Declare the streams (idempotent)."""
        await ensure_streams(self._js)

    def config(self, tenant: str, agent_id: str, runs: RunsSpec) -> ConsumerConfig:
        """The consumer of one agent: explicit ack, at most `concurrency` deliveries
        unacknowledged, at most `maxAttempts` deliveries of a message."""
        return ConsumerConfig(
            durable_name=consumer_name(agent_id),
            description=self.description,
            filter_subject=run_subject(tenant, agent_id),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_ack_pending=runs.concurrency,
            max_deliver=runs.maxAttempts,
        )

    async def ensure_consumer(self, tenant: str, agent_id: str, runs: RunsSpec) -> None:
        """Create the agent's consumer, or update it to `runs` (idempotent; cached per
        process, so a repeat with the same settings costs nothing)."""
        wanted = (tenant, runs.concurrency, runs.maxAttempts)
        if self._known.get(agent_id) == wanted:
            return
        await self._js.add_consumer(RUNS_STREAM, config=self.config(tenant, agent_id, runs))
        self._known[agent_id] = wanted

    async def delete_consumer(self, agent_id: str) -> None:
        """Delete the agent's consumer and purge its queue (idempotent)."""
        self._known.pop(agent_id, None)
        self._subs.pop(agent_id, None)
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(RUNS_STREAM, consumer_name(agent_id))
        with contextlib.suppress(NotFoundError):
            await self._js.purge_stream(RUNS_STREAM, subject=run_subject("*", agent_id))

    async def consumers(self) -> set[str]:
        """The agent uids that have a consumer of this owner on `AGENTOS_RUNS`, and those of
        no owner (made before consumers carried their installation's mark: nobody else
        sweeps them). The server lists at most 256 consumers per request: paged by offset."""
        infos: list[ConsumerInfo] = []
        try:
            while True:
                page = await self._js.consumers_info(RUNS_STREAM, offset=len(infos))
                infos.extend(page)
                if len(page) < CONSUMER_LIST_PAGE:
                    break
        except NotFoundError:
            return set()
        return {
            i.name.removeprefix(CONSUMER_PREFIX)
            for i in infos
            if i.name
            and i.name.startswith(CONSUMER_PREFIX)
            and (i.config.description or "") in (self.description, "")
        }

    async def next_delivery(
        self, tenant: str, agent_id: str, runs: RunsSpec, wait_s: float
    ) -> Delivery | None:
        """Pull one delivery of the agent's queue, waiting up to `wait_s`; None when nothing
        came. Pulls of one agent are serialised (one pull subscription per agent)."""
        await self.ensure_consumer(tenant, agent_id, runs)
        lock = self._locks.setdefault(agent_id, asyncio.Lock())
        async with lock:
            sub = self._subs.get(agent_id)
            if sub is None:
                sub = await self._js.pull_subscribe_bind(
                    consumer_name(agent_id), stream=RUNS_STREAM
                )
                self._subs[agent_id] = sub
            try:
                msgs = await sub.fetch(1, timeout=max(wait_s, 0.05))  # type: ignore[attr-defined]
            except (NatsTimeoutError, TimeoutError):
                return None
        msg = msgs[0]
        body = json.loads(msg.data)
        meta = msg.metadata
        return Delivery(
            run_id=str(body["payload"]["run_id"]),
            reply=str(msg.reply),
            stream_seq=int(meta.sequence.stream),
            num_delivered=int(meta.num_delivered),
            traceparent=body["payload"].get("traceparent"),
        )

    async def ack(self, reply: str) -> None:
        """The run is done with: remove its message from the queue."""
        await self._send(reply, b"+ACK")

    async def in_progress(self, reply: str) -> None:
        """The holder is alive: restart the delivery's ack wait."""
        await self._send(reply, b"+WPI")

    async def nak(self, reply: str, delay_s: float = 0.0) -> None:
        """Deliver again, after `delay_s` (counts as a delivery attempt)."""
        body = b"-NAK"
        if delay_s > 0:
            body += b" " + json.dumps({"delay": int(delay_s * 1e9)}).encode()
        await self._send(reply, body)

    async def term(self, reply: str) -> None:
        """Never deliver this message again (the run ended without its holder)."""
        await self._send(reply, b"+TERM")

    async def delete_message(self, stream_seq: int) -> None:
        """Remove a message JetStream will not deliver again (its deliveries are spent)."""
        with contextlib.suppress(NotFoundError):
            await self._js.delete_msg(RUNS_STREAM, stream_seq)

    async def _send(self, reply: str, body: bytes) -> None:
        await self._nc.publish(reply, body)
        await self._nc.flush()

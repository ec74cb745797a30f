"""The outbox relay process (`agentos relay`), and the relay task that `serve` runs too."""

from __future__ import annotations

import asyncio

from controlplane.bootstrap import Container, stop_on_signals
from controlplane.config import Settings
from controlplane.data.retention import Retention, RetentionPolicy
from controlplane.messaging.relay import Relay
from controlplane.messaging.streams import connect
from controlplane.messaging.webhooks import Notifier, parse_resolve
from controlplane.observability.logging import configure_logging
from controlplane.observability.tracing import configure_tracing


async def run_relay(container: Container, stop: asyncio.Event) -> None:
    """Relay committed outbox events to JetStream (`container.settings.nats_url`), send run
    notifications, and purge what is past its retention (architecture/data-layer.md), until
    `stop` is set; the NATS connection is drained on the way out."""
    settings = container.settings
    assert settings.nats_url, "run_relay needs AGENTOS_NATS_URL"
    nc = await connect(settings.nats_url, name="agentos-relay")
    # Run notifications go out from the relays too (architecture/runs.md, Notify).
    notifier = Notifier(
        container.uow,
        resolve_overrides=parse_resolve(settings.egress_resolve),
        poll_interval_s=settings.notify_poll_interval_s,
        timeout_s=settings.notify_timeout_s,
    )
    notifying = asyncio.create_task(notifier.run(stop))
    retention = Retention(container.engine, retention_policy(settings))
    purging = asyncio.create_task(retention.run(stop, settings.retention_interval_s))
    try:
        relay = Relay(container.engine, settings.database_url, nc, container.relay_config())
        await relay.run(stop)
    finally:
        notifying.cancel()
        purging.cancel()
        await asyncio.gather(notifying, purging, return_exceptions=True)
        await nc.drain()


def retention_policy(settings: Settings) -> RetentionPolicy:
    """The retention the settings ask for (AGENTOS_RETENTION_*, AGENTOS_IDEMPOTENCY_RETENTION_S
    for idempotency keys, which expire by it)."""
    return RetentionPolicy(
        outbox_s=settings.retention_outbox_s,
        run_steps_s=settings.retention_run_steps_s,
        idempotency=True,
        batch_size=settings.retention_batch_size,
    )


def main(settings: Settings) -> None:
    """The `relay` process: configure logging and tracing, serve /metrics on
    AGENTOS_RELAY_METRICS_PORT (loopback) when set, relay until SIGTERM or SIGINT.

    Raises:
        ValueError: AGENTOS_NATS_URL is not set (the relay has nowhere to publish).
    """
    if not settings.nats_url:
        raise ValueError("AGENTOS_NATS_URL is not set; the relay has nowhere to publish")
    configure_logging(settings.log_level, settings.log_format)
    configure_tracing("agentos-relay")
    if settings.relay_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.relay_metrics_port, addr="127.0.0.1")

    async def run() -> None:
        container = Container(settings)
        try:
            await run_relay(container, stop_on_signals())
        finally:
            await container.close()

    asyncio.run(run())

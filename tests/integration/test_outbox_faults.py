"""Faults under the relay on real processes: kill -9 mid-batch, PostgreSQL restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.domain.events.envelope import OutboxState
from controlplane.messaging.relay import Relay, RelayConfig
from controlplane.messaging.streams import EVENTS_STREAM
from harness.ports import free_port
from tests.conftest import service_setting
from tests.integration.outbox_helpers import eventually, states, stream_messages, write_events
from tests.integration.test_outbox_relay import assert_exactly_once_in_order, running

pytestmark = [pytest.mark.postgres, pytest.mark.nats]


def start_relay(env: dict[str, str], metrics_port: int | None = None) -> subprocess.Popen[bytes]:
    env = {
        **env,
        "AGENTOS_RELAY_LEASE_S": "1",
        "AGENTOS_RELAY_POLL_INTERVAL_S": "0.2",
        "AGENTOS_RELAY_BATCH_SIZE": "64",
    }
    if metrics_port:
        env["AGENTOS_RELAY_METRICS_PORT"] = str(metrics_port)
    return subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli.main", "relay"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def test_relay_killed_mid_batch_then_restarted_publishes_each_event_once(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, agentos_env: dict[str, str]
) -> None:
    written = await write_events(pg_engine, aggregates=25, per_aggregate=2)
    js = nc.jetstream()
    # Hold a SHARE lock on the outbox: the relay can claim and publish, but its UPDATE that
    # records the batch as published blocks — the process dies between publish and record.
    admin = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    blocker = await asyncpg.connect(admin)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE outbox IN SHARE MODE")
    first = start_relay(agentos_env)
    try:

        async def stream_has_all() -> bool:
            try:
                return (await js.stream_info(EVENTS_STREAM)).state.messages == len(written)
            except Exception:
                return False

        await eventually(stream_has_all, what="first relay published the batch")
        assert (await states(pg_engine))[OutboxState.OUTBOX_WRITTEN] == len(written)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
        await tx.rollback()
        await blocker.close()

    port = free_port()
    second = start_relay(agentos_env, metrics_port=port)
    try:
        await eventually(
            lambda: _count(pg_engine, OutboxState.PUBLISHED, len(written)),
            what="second relay recorded every event",
        )
        duplicates = metric(port, "agentos_outbox_publish_duplicates_total")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0, "graceful drain on SIGTERM exits 0"
    messages = await stream_messages(js)
    assert_exactly_once_in_order(messages, written)
    assert duplicates == len(written), "re-sends are visible as JetStream duplicates"


async def test_relay_carries_on_after_postgresql_restarts(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS
) -> None:
    data = service_setting("AGENTOS_PG_DATA", "PostgreSQL")
    relay = Relay(pg_engine, pg_url, nc, RelayConfig(poll_interval_s=0.2, lease_s=5))
    async with running(relay):
        before = await write_events(pg_engine, aggregates=5, per_aggregate=1, prefix="pre")
        await eventually(lambda: _count(pg_engine, OutboxState.PUBLISHED, 5), what="published")
        restart = await asyncio.create_subprocess_exec(
            "runuser",
            "-u",
            "postgres",
            "--",
            "/usr/lib/postgresql/15/bin/pg_ctl",
            "-D",
            data,
            "-m",
            "fast",
            "-w",
            "restart",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await restart.communicate()
        assert restart.returncode == 0, err.decode()
        pid = Path(data, "postmaster.pid").read_text().splitlines()[0]
        with open(
            os.path.join(
                service_setting("AGENTOS_SERVICES_DIR", "services"), "pids", "postgres.pid"
            ),
            "w",
        ) as f:
            f.write(pid + "\n")  # keep `make services-down` able to stop it
        after = await write_events(pg_engine, aggregates=5, per_aggregate=1, prefix="post")
        await eventually(lambda: _count(pg_engine, OutboxState.PUBLISHED, 10), what="after restart")
    assert_exactly_once_in_order(await stream_messages(nc.jetstream()), [*before, *after])


async def _count(engine: AsyncEngine, state: str, n: int) -> bool:
    return (await states(engine)).get(state, 0) == n

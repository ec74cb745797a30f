"""`agentos serve` with no AGENTOS_NATS_URL runs its own nats-server (adr/0013): JetStream on
loopback with generated credentials, the store under the state directory, the relay
publishing to it, and the server gone when serve goes — by SIGTERM or by kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import nats
import pytest
from nats.errors import Error as NatsError

from harness.ports import free_port
from harness.waiting import wait_until

CLI = [sys.executable, "-m", "controlplane.cli.main"]


def serve_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    env.update(
        AGENTOS_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'agentos.db'}",
        AGENTOS_STATE_DIR=str(tmp_path / "state"),
        AGENTOS_GRPC_PORT="0",
        # Ports of their own: the defaults (8091, 8092) may be another serve's on this host.
        AGENTOS_GATEWAY_PORT=str(free_port()),
        AGENTOS_EGRESS_PROXY_PORT=str(free_port()),
        AGENTOS_LOG_FORMAT="json",
    )
    return env


def start_serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        assert proc.poll() is None, f"serve exited with {proc.returncode}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, 60, "serve answering /healthz")
    return proc


def server_pid(state: Path) -> int:
    return int((state / "nats" / "server.pid").read_text())


def alive(pid: int) -> bool:
    """The process runs (a zombie, exited but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def listen_address(state: Path) -> tuple[str, int]:
    line = next(
        ln for ln in (state / "nats" / "server.conf").read_text().splitlines() if "listen" in ln
    )
    host, port = line.split(":", 1)[1].strip().rsplit(":", 1)
    return host, int(port)


async def stream_names(url: str) -> list[str]:
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    try:
        return sorted(s.config.name or "" for s in await nc.jetstream().streams_info())
    finally:
        await nc.close()


def test_serve_without_a_nats_url_runs_jetstream_on_loopback_with_credentials(
    tmp_path: Path,
) -> None:
    env, port = serve_env(tmp_path), free_port()
    state = tmp_path / "state"
    proc = start_serve(env, port)
    try:
        host, nats_port = listen_address(state)
        assert host == "127.0.0.1"
        password_file = state / "nats" / "password"
        assert password_file.stat().st_mode & 0o077 == 0, "the password is readable by root only"
        password = password_file.read_text().strip()
        url = f"nats://agentos:{password}@127.0.0.1:{nats_port}"
        # The relay declared its streams on the embedded server.
        streams = ["AGENTOS_DLQ", "AGENTOS_EVENTS", "AGENTOS_RUNS"]
        wait_until(lambda: asyncio.run(stream_names(url)) == streams, 30, "the relay's streams")
        with pytest.raises(NatsError):
            asyncio.run(stream_names(f"nats://127.0.0.1:{nats_port}"))
        with pytest.raises(NatsError):
            asyncio.run(stream_names(f"nats://agentos:wrong@127.0.0.1:{nats_port}"))
        assert (state / "nats" / "jetstream").is_dir()
        pid = server_pid(state)
        assert alive(pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    wait_until(lambda: not alive(pid), 10, "the embedded nats-server stopped with serve")


def test_the_embedded_server_dies_with_a_killed_serve_and_the_next_serve_starts_afresh(
    tmp_path: Path,
) -> None:
    env, port = serve_env(tmp_path), free_port()
    state = tmp_path / "state"
    proc = start_serve(env, port)
    first = server_pid(state)
    password = (state / "nats" / "password").read_text()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    wait_until(lambda: not alive(first), 10, "the nats-server of a killed serve ended")
    proc = start_serve(env, port)
    try:
        second = server_pid(state)
        assert second != first and alive(second)
        assert (state / "nats" / "password").read_text() == password, "credentials kept"
        _, nats_port = listen_address(state)
        url = f"nats://agentos:{password.strip()}@127.0.0.1:{nats_port}"
        streams = ["AGENTOS_DLQ", "AGENTOS_EVENTS", "AGENTOS_RUNS"]
        wait_until(lambda: asyncio.run(stream_names(url)) == streams, 30, "the relay's streams")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_an_agent_created_on_embedded_defaults_has_its_events_published(tmp_path: Path) -> None:
    env, port = serve_env(tmp_path), free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_serve(env, port)
    try:
        token = subprocess.run(
            [*CLI, "token", "create", "--principal", "t", "--platform-admin"],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip()  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"}
        manifest = {
            "apiVersion": "agentos.io/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "a1"},
            "spec": {
                "image": "local/x",
                "command": ["sleep", "60"],
                "runtime": {"class": "process"},
            },
        }
        made = httpx.post(f"{base}/api/v1/tenants/t1/agents", json=manifest, headers=headers)
        assert made.status_code == 201, made.text

        def published() -> bool:
            status = subprocess.run(
                [*CLI, "outbox", "status", "-o", "json"],
                env=env, capture_output=True, text=True, timeout=60, check=True,
            ).stdout  # fmt: skip
            counts = json.loads(status)["counts"]
            return counts.get("OutboxWritten", 0) == 0 and counts.get("Published", 0) > 0

        wait_until(published, 60, "every outbox event Published to the embedded JetStream")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

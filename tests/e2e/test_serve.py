"""`agentos serve` on embedded defaults (what `make run` starts) and the CLI's surface."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.ports import free_port
from harness.waiting import wait_until

CLI = [sys.executable, "-m", "controlplane.cli.main"]


def healthz(base_url: str, proc: subprocess.Popen[bytes]) -> httpx.Response | None:
    """The answer of /healthz, or None while nothing listens; fails if `proc` died."""
    assert proc.poll() is None, f"serve exited with {proc.returncode}"
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1)
    except httpx.TransportError:
        return None


def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    env["AGENTOS_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'agentos.db'}"
    env["AGENTOS_STATE_DIR"] = str(tmp_path / "state")
    env["AGENTOS_GRPC_PORT"] = str(free_port())
    # Ports of their own: the defaults (8091, 8092) may be another serve's on this host.
    env["AGENTOS_GATEWAY_PORT"] = str(free_port())
    env["AGENTOS_EGRESS_PROXY_PORT"] = str(free_port())
    return env


def test_serve_on_embedded_defaults_answers_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = embedded_env(tmp_path)
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        answer = wait_until(
            lambda: healthz(f"http://127.0.0.1:{port}", proc), 60, "serve answering /healthz"
        )
        assert answer.status_code == 200 and answer.json() == {"status": "ok"}
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert metrics.status_code == 200 and "python_info" in metrics.text
        assert (tmp_path / "agentos.db").exists(), "the SQLite file is migrated at start"
        with grpc.insecure_channel(f"127.0.0.1:{env['AGENTOS_GRPC_PORT']}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="agentos.v1.AgentService"), timeout=10
            )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0


def test_serve_requires_a_token_and_says_how_to_make_the_first(tmp_path: Path) -> None:
    port = free_port()
    env = embedded_env(tmp_path)
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: healthz(base, proc), 60, "serve answering /healthz")
        anonymous = httpx.get(f"{base}/api/v1/tenants")
        assert anonymous.status_code == 401
        assert anonymous.json()["code"] == "UNAUTHENTICATED"
        made = subprocess.run(
            [*CLI, "token", "create", "--principal", "first", "--platform-admin"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        token = made.stdout.strip()
        assert token.startswith("aos_") and "\n" not in token, "only the token on stdout"
        listed = httpx.get(f"{base}/api/v1/tenants", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200 and listed.json()["kind"] == "TenantList"
        cli_env = {**env, "AGENTOS_API_URL": base, "AGENTOS_TOKEN": token}
        got = subprocess.run(
            [*CLI, "get", "agents", "-n", "nobody"], env=cli_env, capture_output=True, text=True
        )
        assert got.returncode == 0 and got.stdout.startswith("NAME"), got.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "agentos token create --principal admin --platform-admin" in stderr


def test_help_lists_the_commands_of_the_design() -> None:
    out = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60).stdout
    for command in (
        "serve",
        "apply",
        "get",
        "describe",
        "delete",
        "operator",
        "relay",
        "db",
        "outbox",
        "token",
    ):
        assert f" {command} " in out, command
    outbox = subprocess.run([*CLI, "outbox", "--help"], capture_output=True, text=True).stdout
    assert all(f" {c} " in outbox for c in ("status", "replay", "dlq"))

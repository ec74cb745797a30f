"""`agentos serve` on embedded defaults (what `make run` starts) and the CLI's surface."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.conftest import free_port
from tests.waiting import wait_until

CLI = [sys.executable, "-m", "controlplane.cli.main"]


def healthz(base_url: str, proc: subprocess.Popen[bytes]) -> httpx.Response | None:
    """The answer of /healthz, or None while nothing listens; fails if `proc` died."""
    assert proc.poll() is None, f"serve exited with {proc.returncode}"
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1)
    except httpx.TransportError:
        return None


def test_serve_on_embedded_defaults_answers_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    env["AGENTOS_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'agentos.db'}"
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
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0


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
    ):
        assert f" {command} " in out, command
    outbox = subprocess.run([*CLI, "outbox", "--help"], capture_output=True, text=True).stdout
    assert all(f" {c} " in outbox for c in ("status", "replay", "dlq"))

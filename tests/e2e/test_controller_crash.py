"""`agentos serve` killed with SIGKILL while agents are starting, then started again: no
sandbox is leaked and no agent stays stuck. Real PostgreSQL, real child processes, the CLI
and the REST API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.ports import free_port
from harness.waiting import wait_until
from tests.e2e.test_serve import healthz

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "controlplane.cli.main"]


def manifest(name: str, delay_s: float) -> dict:
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "image": "local/none",
            # Sleep before heartbeating, so that the agents are still Starting at the kill.
            "command": [
                "sh",
                "-c",
                f"sleep {delay_s}; exec {sys.executable} "
                f"{ROOT / 'examples/agents/heartbeat_agent.py'}",
            ],
            "runtime": {"class": "process"},
            "readiness": {"heartbeat": {}, "periodSeconds": 0.5},
            "config": {"heartbeat_period_s": 0.1},
        },
    }


def serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*CLI, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        wait_until(lambda: healthz(env["AGENTOS_API_URL"], proc), 60, "serve answering /healthz")
    except AssertionError:
        proc.kill()
        raise
    return proc


def phases(env: dict[str, str]) -> dict[str, str]:
    run = subprocess.run(
        [*CLI, "get", "agents", "-n", "crash", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    return {i["metadata"]["name"]: i["status"]["phase"] for i in json.loads(out)["items"]}


def wait(env: dict[str, str], check, what: str, timeout_s: float = 90) -> None:
    wait_until(lambda: check(phases(env)), timeout_s, what)


def sandboxes(state: Path) -> set[str]:
    return {p.parent.name for p in state.glob("process/*/spec.json")}


def live_agent_processes(state: Path) -> int:
    count = 0
    for pid_file in state.glob("process/*/pid"):
        pid = int(pid_file.read_text())
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            count += 1
    return count


def test_controller_killed_while_agents_start_recovers_without_leaks(
    tmp_path: Path, pg_url: str
) -> None:
    port = free_port()
    state = tmp_path / "state"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")},
        "AGENTOS_DATABASE_URL": pg_url,
        "AGENTOS_PORT": str(port),
        "AGENTOS_API_URL": f"http://127.0.0.1:{port}",
        "AGENTOS_STATE_DIR": str(state),
        "AGENTOS_GRPC_PORT": str(free_port()),
    }
    env["AGENTOS_TOKEN"] = subprocess.run(
        [*CLI, "token", "create", "--principal", "e2e", "--platform-admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    ).stdout.strip()
    folder = tmp_path / "manifests"
    folder.mkdir()
    names = [f"agent-{i}" for i in range(4)]
    for name in names:
        (folder / f"{name}.json").write_text(json.dumps(manifest(name, delay_s=3)))

    first = serve(env)
    try:
        out = subprocess.run(
            [*CLI, "apply", "-f", str(folder), "-n", "crash"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("created") == 4
        wait(env, lambda p: sorted(p.values()) == ["Starting"] * 4, "all Starting")
        assert len(sandboxes(state)) == 4
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

    second = serve(env)
    try:
        wait(env, lambda p: sorted(p.values()) == ["Ready"] * 4, "all Ready after restart")
        assert len(sandboxes(state)) == 4, "no extra sandbox"
        assert live_agent_processes(state) == 4
        for name in names:
            subprocess.run(
                [*CLI, "delete", "agent", name, "-n", "crash"],
                env=env,
                check=True,
                capture_output=True,
                timeout=30,
            )
        wait(env, lambda p: p == {}, "all deleted")
        assert sandboxes(state) == set() and live_agent_processes(state) == 0
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)

"""`agentos serve` as a subprocess on the real PostgreSQL and NATS, with agents on the SDK
(tests/agents/counting_agent.py) in process sandboxes, for the run tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from harness.ports import free_port
from harness.waiting import wait_until
from tests.conftest import service_setting

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "controlplane.cli.main"]
AGENT = ROOT / "tests" / "agents" / "counting_agent.py"
TERMINAL = {"Succeeded", "Failed", "Canceled", "TimedOut"}


class Plane:
    """One control plane (database, NATS, state directory), restartable."""

    def __init__(self, tmp: Path, database_url: str, nats_url: str | None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.counts = tmp / "counts"
        self.counts.mkdir()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")},
            "AGENTOS_DATABASE_URL": database_url,
            # None: serve starts its embedded nats-server (adr/0013).
            **({"AGENTOS_NATS_URL": nats_url} if nats_url else {}),
            "AGENTOS_PORT": str(self.port),
            "AGENTOS_GRPC_PORT": str(free_port()),
            "AGENTOS_GATEWAY_PORT": str(free_port()),
            "AGENTOS_EGRESS_PROXY_PORT": str(free_port()),
            "AGENTOS_STATE_DIR": str(tmp / "state"),
            "AGENTOS_RUNTIME": "process",
            "AGENTOS_RUN_ACK_WAIT_S": "15",
            "AGENTOS_RATE_LIMIT_PER_S": "0",
            "AGENTOS_LOG_FORMAT": "json",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(
            [*CLI, "db", "upgrade"], env=self.env, capture_output=True, timeout=120, check=True
        )
        token = subprocess.run(
            [*CLI, "token", "create", "--principal", "runs-e2e", "--platform-admin"],
            env=self.env, capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
        ).stdout.strip()  # fmt: skip
        self.http = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def start(self) -> None:
        log = open(self.tmp / "serve.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [*CLI, "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        log.close()

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            try:
                return httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 60, "serve answering /readyz")

    def kill(self) -> None:
        """kill -9 of serve (API, controller, relay, gateway in one process)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """Stop serve, then the process sandboxes it leaves running (by design they outlive
        serve, which adopts them on its next start): none outlives the test."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
            self.proc = None
        for pid_file in (self.tmp / "state" / "process").glob("*/pid"):
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)

    def log_tail(self) -> str:
        path = self.tmp / "serve.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def apply_agent(
        self,
        tenant: str,
        name: str,
        restart_policy: str = "Always",
        agent_path: Path = AGENT,
        **runs: Any,
    ) -> None:
        manifest = {
            "apiVersion": "agentos.io/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": name},
            "spec": {
                "image": "local/counting-agent",
                "command": [sys.executable, str(agent_path)],
                "runtime": {"class": "process"},
                "restartPolicy": restart_policy,
                "readiness": {"heartbeat": {}, "periodSeconds": 1},
                "env": [
                    {"name": "PYTHONPATH", "value": str(ROOT / "sdk" / "python")},
                    {"name": "COUNT_DIR", "value": str(self.counts)},
                    {"name": "AGENTOS_HEARTBEAT_SECONDS", "value": "1"},
                ],
                "runs": runs,
            },
        }
        answer = self.http.post(f"/api/v1/tenants/{tenant}/agents", json=manifest)
        assert answer.status_code == 201, answer.text
        self.wait_agent(tenant, name, "Ready")

    def agent(self, tenant: str, name: str) -> dict[str, Any]:
        answer = self.http.get(f"/api/v1/tenants/{tenant}/agents/{name}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def wait_agent(self, tenant: str, name: str, phase: str, timeout_s: float = 60) -> None:
        wait_until(
            lambda: self.agent(tenant, name)["status"]["phase"] == phase,
            timeout_s,
            f"agent {name} {phase}",
        )

    def submit(self, tenant: str, agent: str, run_input: Any, **extra: Any) -> str:
        answer = self.http.post(
            f"/api/v1/tenants/{tenant}/agents/{agent}/runs", json={"input": run_input, **extra}
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["metadata"]["name"])

    def run(self, tenant: str, name: str) -> dict[str, Any]:
        answer = self.http.get(f"/api/v1/tenants/{tenant}/runs/{name}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def wait_run(self, tenant: str, name: str, timeout_s: float = 60) -> dict[str, Any]:
        """The run once terminal."""
        found: dict[str, Any] = wait_until(
            lambda: (r := self.run(tenant, name))["status"]["phase"] in TERMINAL and r,
            timeout_s,
            f"run {name} finished",
        )
        return found

    def steps(self, tenant: str, name: str) -> list[dict[str, Any]]:
        answer = self.http.get(f"/api/v1/tenants/{tenant}/runs/{name}/steps")
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    def effects(self) -> list[tuple[str, int, int]]:
        """Every execution of the tool `effect`: (run, step, attempt)."""
        path = self.counts / "effects.log"
        if not path.exists():
            return []
        rows = [line.split() for line in path.read_text().splitlines() if line]
        return [(r[0], int(r[1]), int(r[2])) for r in rows]

    def deleted(self) -> list[tuple[str, str, int]]:
        """Every execution of the destructive tool `delete_file`: (run, path, attempt)."""
        path = self.counts / "deleted.log"
        if not path.exists():
            return []
        rows = [line.split() for line in path.read_text().splitlines() if line]
        return [(r[0], r[1], int(r[2])) for r in rows]

    def sandbox_pid(self, tenant: str, agent: str) -> int:
        sandbox = self.agent(tenant, agent)["status"]["sandboxID"]
        return int((self.tmp / "state" / "process" / sandbox / "pid").read_text())

    def sandbox_env(self, tenant: str, agent: str) -> dict[str, str]:
        import json

        sandbox = self.agent(tenant, agent)["status"]["sandboxID"]
        spec = json.loads((self.tmp / "state" / "process" / sandbox / "spec.json").read_text())
        env: dict[str, str] = spec["env"]
        return env


@contextlib.contextmanager
def started_plane(
    tmp: Path, database_url: str, env: dict[str, str] | None = None
) -> Iterator[Plane]:
    """A Plane on `database_url` and the services' NATS, with `env` added, started; stopped
    (its sandboxes too) on the way out."""
    plane = Plane(tmp, database_url, service_setting("AGENTOS_NATS_URL", "NATS JetStream"))
    plane.env |= env or {}
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


def tenant_name() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"

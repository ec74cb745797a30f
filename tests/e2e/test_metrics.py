"""`agentos serve` exposes the whole process on /metrics: an agent taken through its lifecycle
moves the start-latency histogram, the start and runtime counters, the API counters and the
relay's published counter — and no label names the agent or its tenant.

Real PostgreSQL, a private nats-server (relay on), the process runtime.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.nats import PrivateNats
from harness.ports import free_port
from harness.waiting import wait_until
from tests.e2e.test_serve import healthz
from tests.integration.conftest import private_nats as private_nats  # the fixture

pytestmark = [pytest.mark.postgres, pytest.mark.nats]
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "controlplane.cli.main"]
TENANT, NAME = "metrics-tenant", "metrics-agent"
AGENT = f"/api/v1/tenants/{TENANT}/agents/{NAME}"
MANIFEST = {
    "apiVersion": "agentos.io/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": NAME},
    "spec": {
        "image": "local/none",
        "command": [sys.executable, str(ROOT / "examples/agents/heartbeat_agent.py")],
        "runtime": {"class": "process"},
        "readiness": {"heartbeat": {}, "periodSeconds": 0.5},
        "config": {"heartbeat_period_s": 0.1},
    },
}


def scrape(base_url: str) -> tuple[str, dict[tuple[str, frozenset], float]]:
    """/metrics as text and as {(sample name, labels): value}."""
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


AUTH: dict[str, str] = {}  # the platform admin's header, made by the `serve` fixture


def phase(base_url: str) -> str | None:
    answer = httpx.get(f"{base_url}{AGENT}", headers=AUTH, timeout=5)
    return answer.json()["status"]["phase"] if answer.status_code == 200 else None


@pytest.fixture
def serve(tmp_path: Path, pg_url: str, private_nats: PrivateNats) -> Iterator[str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")},
        "AGENTOS_DATABASE_URL": pg_url,
        "AGENTOS_NATS_URL": private_nats.url,
        "AGENTOS_RUNTIME": "process",
        "AGENTOS_STATE_DIR": str(tmp_path / "state"),
        "AGENTOS_PORT": str(port),
    }
    base_url = f"http://127.0.0.1:{port}"
    made = subprocess.run(
        [*CLI, "token", "create", "--principal", "metrics-test", "--platform-admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    AUTH["Authorization"] = f"Bearer {made.stdout.strip()}"
    proc = subprocess.Popen(
        [*CLI, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        wait_until(lambda: healthz(base_url, proc), 60, "serve answering /healthz")
        yield base_url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_an_agent_lifecycle_moves_the_slis_on_the_metrics_of_serve(serve: str) -> None:
    _, before = scrape(serve)
    published_before = value(before, "agentos_outbox_published_total")

    created = httpx.put(f"{serve}{AGENT}", json=MANIFEST, headers=AUTH, timeout=10)
    assert created.status_code == 201, created.text
    wait_until(lambda: phase(serve) == "Ready", 90, f"{NAME} Ready")

    text, after = scrape(serve)
    process = {"runtime_class": "process"}
    assert value(after, "agentos_agent_start_duration_seconds_count", **process) == 1
    assert value(after, "agentos_agent_start_duration_seconds_bucket", le="+Inf", **process) == 1
    assert value(after, "agentos_agent_start_attempts_total", **process) == 1
    assert value(after, "agentos_agent_starts_total", result="success", **process) == 1
    # tenant.created, agent.created and Created → Scheduled → Starting: all published before
    # Ready (architecture/state-machines.md), by the relay inside serve.
    assert value(after, "agentos_outbox_published_total") >= published_before + 5
    route = "/api/v1/tenants/{tenant}/agents/{name}"
    assert value(after, "agentos_api_requests_total", route=route, method="PUT", code="201") == 1
    assert value(after, "agentos_api_requests_total", route=route, method="GET", code="200") >= 1
    runtime_start = {"runtime": "process", "operation": "start", "result": "ok"}
    assert value(after, "agentos_runtime_operations_total", **runtime_start) >= 1
    assert value(after, "agentos_controller_reconcile_total", result="success") > 0
    assert NAME not in text and TENANT not in text, "no label names the agent or its tenant"

    wait_until(
        lambda: value(scrape(serve)[1], "agentos_agents", phase="Ready") == 1,
        30,
        "agentos_agents{phase=Ready} refreshed from the database",
    )

    assert httpx.delete(f"{serve}{AGENT}", headers=AUTH, timeout=10).status_code == 202
    wait_until(lambda: phase(serve) is None, 60, f"{NAME} deleted")
    _, gone = scrape(serve)
    assert (
        value(
            gone,
            "agentos_runtime_operations_total",
            runtime="process",
            operation="remove",
            result="ok",
        )
        >= 1
    )

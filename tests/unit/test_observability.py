"""The metrics of architecture/slos.md as the code records them, and trace ids in logs and problems.

Counters are process-wide, so each test reads a sample before and after what it does."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY

from controlplane.api.app import create_app
from controlplane.bootstrap import Container
from controlplane.config import Settings
from controlplane.controllers.machinery.workqueue import WorkQueue
from controlplane.data import migrate
from controlplane.data.repositories.agents import phase_counter
from controlplane.domain.agents.model import AgentStatus, parse_agent
from controlplane.domain.events.envelope import rfc3339
from controlplane.domain.records import AgentRecord
from controlplane.observability import metrics
from controlplane.observability.inventory import refresh_agent_phases
from controlplane.observability.logging import configure_logging
from controlplane.observability.tracing import configure_tracing
from controlplane.runtimes.base import SandboxError, SandboxSpec, SandboxState
from controlplane.runtimes.instrumented import InstrumentedRuntime, instrument
from controlplane.runtimes.process import ProcessRuntime
from controlplane.service.tokens import create_token

CREATED_AT = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
MANIFEST: dict[str, Any] = {
    "apiVersion": "agentos.io/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "obs-agent"},
    "spec": {"image": "local/none", "runtime": {"class": "gvisor"}},
}


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def record(phase: str, runtime_class: str = "gvisor", **status: Any) -> AgentRecord:
    manifest = {**MANIFEST, "spec": {**MANIFEST["spec"], "runtime": {"class": runtime_class}}}
    return AgentRecord(
        id="id-1",
        tenant="t1",
        name="obs-agent",
        labels={},
        annotations={},
        spec=parse_agent(manifest).spec,
        status=AgentStatus(phase=phase, **status),
        generation=1,
        resource_version=1,
        created_at=CREATED_AT,
        deletion_requested_at=None,
    )


READY = {"type": "Ready", "status": "True", "reason": "ProbeSucceeded", "message": "",
         "lastTransitionTime": rfc3339(CREATED_AT), "observedGeneration": 1}  # fmt: skip


# -- agent lifecycle --------------------------------------------------------------------------


def test_scheduled_to_starting_is_a_start_attempt_of_its_runtime_class() -> None:
    before = sample("agentos_agent_start_attempts_total", runtime_class="gvisor")
    metrics.observe_transition(record("Scheduled"), record("Starting"))
    assert sample("agentos_agent_start_attempts_total", runtime_class="gvisor") == before + 1


def test_the_first_ready_counts_a_success_and_observes_creation_to_ready() -> None:
    labels = {"runtime_class": "runc"}
    success = sample("agentos_agent_starts_total", result="success", **labels)
    within_5s = sample("agentos_agent_start_duration_seconds_bucket", le="5.0", **labels)
    within_2s = sample("agentos_agent_start_duration_seconds_bucket", le="2.0", **labels)
    total_s = sample("agentos_agent_start_duration_seconds_sum", **labels)
    ready_at = rfc3339(CREATED_AT + timedelta(seconds=3))
    metrics.observe_transition(
        record("Starting", "runc"), record("Ready", "runc", readyAt=ready_at, conditions=[READY])
    )
    assert sample("agentos_agent_starts_total", result="success", **labels) == success + 1
    assert sample("agentos_agent_start_duration_seconds_bucket", le="5.0", **labels) == (
        within_5s + 1
    )
    assert sample("agentos_agent_start_duration_seconds_bucket", le="2.0", **labels) == within_2s
    assert sample("agentos_agent_start_duration_seconds_sum", **labels) == total_s + 3


def test_a_ready_after_a_restart_counts_a_success_but_no_start_duration() -> None:
    labels = {"runtime_class": "process"}
    success = sample("agentos_agent_starts_total", result="success", **labels)
    observed = sample("agentos_agent_start_duration_seconds_count", **labels)
    was_ready = {**READY, "status": "False", "reason": "SandboxExited"}
    metrics.observe_transition(
        record("Starting", "process", conditions=[was_ready], restartCount=1),
        record("Ready", "process", readyAt=rfc3339(CREATED_AT + timedelta(hours=1))),
    )
    assert sample("agentos_agent_starts_total", result="success", **labels) == success + 1
    assert sample("agentos_agent_start_duration_seconds_count", **labels) == observed


def test_a_failed_start_counts_a_failure_and_its_reason_from_a_fixed_set() -> None:
    failure = sample("agentos_agent_starts_total", result="failure", runtime_class="gvisor")
    by_reason = sample("agentos_agent_failures_total", reason="ImageNotFound")
    other = sample("agentos_agent_failures_total", reason="Other")
    metrics.observe_transition(record("Starting"), record("Failed", reason="ImageNotFound"))
    metrics.observe_transition(record("Ready"), record("Failed", reason="SomethingNew-42"))
    assert sample("agentos_agent_starts_total", result="failure", runtime_class="gvisor") == (
        failure + 1
    ), "a failure of a Ready agent is not a failed start"
    assert sample("agentos_agent_failures_total", reason="ImageNotFound") == by_reason + 1
    assert sample("agentos_agent_failures_total", reason="Other") == other + 1
    assert sample("agentos_agent_failures_total", reason="SomethingNew-42") == 0


async def test_agents_by_phase_are_counted_in_the_database(tmp_path: Path) -> None:
    from controlplane.service.agents import apply_agent

    url = f"sqlite+aiosqlite:///{tmp_path / 'phases.db'}"
    migrate.upgrade(url)
    container = Container(Settings(database_url=url, state_dir=tmp_path / "state"))
    try:
        for name in ("a1", "a2"):
            manifest = {**MANIFEST, "metadata": {"name": name}}
            async with container.uow() as uow:
                await apply_agent(uow, "t1", manifest)
        counts = await refresh_agent_phases(phase_counter(container.engine))
    finally:
        await container.close()
    assert counts["Created"] == 2 and counts["Ready"] == 0
    assert sample("agentos_agents", phase="Created") == 2
    assert sample("agentos_agents", phase="Ready") == 0, "every phase is set, 0 when none"


# -- controller and runtimes ------------------------------------------------------------------


async def test_the_work_queue_reports_its_depth_and_adds() -> None:
    q = WorkQueue(name="unit-test")
    q.add("a")
    q.add("a")  # deduplicated: not an add
    q.add("b")
    assert sample("agentos_workqueue_depth", name="unit-test") == 2
    assert sample("agentos_workqueue_adds_total", name="unit-test") == 2
    await q.get()
    assert sample("agentos_workqueue_depth", name="unit-test") == 1
    assert sample("agentos_workqueue_queue_duration_seconds_count", name="unit-test") == 1
    q.shutdown()
    assert sample("agentos_workqueue_depth", name="unit-test") == 0


def test_a_reconcile_is_timed_and_counted_by_result() -> None:
    ok = sample("agentos_controller_reconcile_total", result="success")
    errors = sample("agentos_controller_reconcile_errors_total")
    timed = sample("agentos_controller_reconcile_duration_seconds_count")
    with metrics.observe_reconcile("id-1"):
        pass
    with pytest.raises(RuntimeError), metrics.observe_reconcile("id-1"):
        raise RuntimeError("boom")
    assert sample("agentos_controller_reconcile_total", result="success") == ok + 1
    assert sample("agentos_controller_reconcile_errors_total") == errors + 1
    assert sample("agentos_controller_reconcile_duration_seconds_count") == timed + 2


async def test_an_instrumented_runtime_counts_each_operation_and_passes_errors_through(
    tmp_path: Path,
) -> None:
    runtime = InstrumentedRuntime(ProcessRuntime(tmp_path / "sandboxes"))
    labels = {"runtime": "process"}
    status_ok = sample(
        "agentos_runtime_operations_total", operation="status", result="ok", **labels
    )
    create_err = sample(
        "agentos_runtime_operations_total", operation="create", result="error", **labels
    )
    timed = sample("agentos_runtime_operation_duration_seconds_count", operation="create", **labels)
    assert (await runtime.status("nope")).state is SandboxState.MISSING
    no_command = SandboxSpec("sb-1", "id-1", "t1", "obs-agent", "local/none", "process")
    with pytest.raises(SandboxError) as raised:
        await runtime.create(no_command)
    assert raised.value.reason == "NoCommand"
    assert sample(
        "agentos_runtime_operations_total", operation="status", result="ok", **labels
    ) == (status_ok + 1)
    assert sample(
        "agentos_runtime_operations_total", operation="create", result="error", **labels
    ) == (create_err + 1)
    assert sample(
        "agentos_runtime_operation_duration_seconds_count", operation="create", **labels
    ) == (timed + 1)


def test_instrument_wraps_a_backend_that_serves_several_classes_once(tmp_path: Path) -> None:
    backend = ProcessRuntime(tmp_path)
    wrapped = instrument({"runc": backend, "gvisor": backend})
    assert wrapped["runc"] is wrapped["gvisor"]
    assert isinstance(wrapped["runc"], InstrumentedRuntime) and wrapped["runc"].name == "process"


# -- API --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracer_provider() -> TracerProvider:
    provider: TracerProvider = configure_tracing("agentos-unit-test")
    return provider


@pytest.fixture
async def client(tmp_path: Path, tracer_provider: TracerProvider) -> AsyncIterator[Any]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    migrate.upgrade(url)
    container = Container(Settings(database_url=url, state_dir=tmp_path / "state"))
    async with container.uow() as uow:
        admin = await create_token(uow, "root", platform_admin=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(container)),
        base_url="http://test",
        headers={"Authorization": f"Bearer {admin.token}"},
    ) as c:
        yield c
    await container.close()


async def test_api_requests_are_counted_by_route_template_never_by_raw_path(client: Any) -> None:
    route = "/api/v1/tenants/{tenant}/agents/{name}"
    created = sample("agentos_api_requests_total", route=route, method="PUT", code="201")
    missing = sample("agentos_api_requests_total", route=route, method="GET", code="404")
    unmatched = sample("agentos_api_requests_total", route="unmatched", method="GET", code="404")
    timed = sample("agentos_api_request_duration_seconds_count", route=route, method="PUT")
    assert (
        await client.put("/api/v1/tenants/t-raw/agents/obs-agent", json=MANIFEST)
    ).status_code == 201
    assert (await client.get("/api/v1/tenants/t-raw/agents/nobody")).status_code == 404
    assert (await client.get("/no/such/path")).status_code == 404
    assert (
        sample("agentos_api_requests_total", route=route, method="PUT", code="201") == created + 1
    )
    assert (
        sample("agentos_api_requests_total", route=route, method="GET", code="404") == missing + 1
    )
    assert sample("agentos_api_requests_total", route="unmatched", method="GET", code="404") == (
        unmatched + 1
    )
    assert sample("agentos_api_request_duration_seconds_count", route=route, method="PUT") == (
        timed + 1
    )
    routes = {
        s.labels["route"]
        for family in REGISTRY.collect()
        if family.name == "agentos_api_requests"
        for s in family.samples
    }
    assert not any("t-raw" in r or "nobody" in r or "/no/such" in r for r in routes), routes


async def test_a_problem_carries_the_trace_id_of_its_request(client: Any) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    answer = await client.get(
        "/api/v1/tenants/t1/agents/nobody",
        headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
    )
    assert answer.status_code == 404 and answer.json()["trace_id"] == trace_id


# -- logs -------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()


def test_log_lines_carry_the_trace_id_of_the_current_span(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "json")  # here, not in a fixture: it binds the current stderr
    log = structlog.get_logger("agentos.test")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        log.info("inside")
        logging.getLogger("stdlib.test").warning("inside too")
    log.info("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    by_event = {line["event"]: line for line in lines}
    expected = format(span.get_span_context().trace_id, "032x")
    assert by_event["inside"]["trace_id"] == expected
    assert by_event["inside too"]["trace_id"] == expected, "stdlib records too"
    assert by_event["inside"]["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in by_event["outside"]

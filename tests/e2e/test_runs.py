"""Runs end to end (architecture/runs.md): `agentos serve` on the real PostgreSQL and NATS,
agents on the SDK in process sandboxes, every tool side effect counted in a file.

One control plane serves the module; each test has its own tenant and agent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from google.protobuf import json_format
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from controlplane.api.grpc.gen import run_service_pb2, run_service_pb2_grpc
from controlplane.data.tables import agent_credentials
from harness.waiting import wait_until
from tests.e2e.runs_plane import CLI, ROOT, Plane, started_plane, tenant_name

pytestmark = [pytest.mark.postgres, pytest.mark.nats]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, plane_database: str) -> Iterator[Plane]:
    with started_plane(tmp_path_factory.mktemp("runs"), plane_database) as control:
        yield control


def test_a_run_goes_pending_dispatched_running_succeeded_with_its_steps(plane: Plane) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "worker")
    name = plane.submit(tenant, "worker", {"steps": 4})
    run = plane.wait_run(tenant, name)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["output"] == {"steps": 4, "attempt": 1}
    assert run["status"]["attempt"] == 1
    steps = plane.steps(tenant, name)
    assert [(s["callId"], s["type"], s["name"]) for s in steps] == [
        (str(k), "tool", "effect") for k in range(1, 5)
    ]
    assert sorted(e[1] for e in plane.effects() if e[0] == name) == [1, 2, 3, 4]
    events = plane.http.get(f"/api/v1/tenants/{tenant}/runs/{name}/events").text
    phases = [line.split(": ", 1)[1] for line in events.splitlines() if line.startswith("event:")]
    assert phases[0] == "run.created" and phases[-1] == "run.succeeded"
    assert "run.dispatch" not in phases, "the queue message is not an event users see"
    assert phases.count("run.step_recorded") == 4
    assert phases.index("run.started") < phases.index("run.step_recorded")


def test_twenty_concurrent_creates_with_one_idempotency_key_make_one_run_that_runs_once(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "once", concurrency=4)
    url = f"{plane.base}/api/v1/tenants/{tenant}/agents/once/runs"
    headers = {**plane.http.headers, "Idempotency-Key": f"k-{tenant}"}

    def create() -> tuple[int, str]:
        answer = httpx.post(url, json={"input": {"steps": 2}}, headers=headers, timeout=30)
        return answer.status_code, answer.text

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: create(), range(20)))
    created = {json.loads(text)["metadata"]["name"] for code, text in answers if code == 201}
    assert len(created) == 1, answers
    assert {code for code, _ in answers} <= {201, 409}, "a key still in flight answers 409"
    [name] = created
    assert plane.wait_run(tenant, name)["status"]["phase"] == "Succeeded"
    listed = plane.http.get(f"/api/v1/tenants/{tenant}/runs").json()["items"]
    assert [r["metadata"]["name"] for r in listed] == [name]
    assert sorted(e[1] for e in plane.effects() if e[0] == name) == [1, 2]


def test_kill_9_of_the_sandbox_mid_run_resumes_on_attempt_2_without_repeating_steps(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "resumer")
    gate = plane.counts / f"gate-{tenant}"
    name = plane.submit(tenant, "resumer", {"steps": 4, "gate": str(gate), "gate_after": 2})
    waiting = plane.counts / f"{name}.waiting"
    wait_until(waiting.exists, 60, "the handler past step 2")
    pid = int(waiting.read_text())
    assert pid == plane.sandbox_pid(tenant, "resumer")
    os.kill(pid, signal.SIGKILL)
    gate.touch()  # attempt 2 does not wait: it passes the gate
    run = plane.wait_run(tenant, name, timeout_s=90)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["attempt"] == 2
    executed = Counter(step for run_name, step, _ in plane.effects() if run_name == name)
    assert executed == {1: 1, 2: 1, 3: 1, 4: 1}, "steps 1-2 ran once, on attempt 1"
    attempts = {step: attempt for run_name, step, attempt in plane.effects() if run_name == name}
    assert attempts == {1: 1, 2: 1, 3: 2, 4: 2}


def test_a_run_past_its_timeout_ends_timed_out_and_its_handler_is_cancelled(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "slow")
    name = plane.submit(tenant, "slow", {"steps": 1, "sleep": 60}, timeoutSeconds=3)
    run = plane.wait_run(tenant, name)
    assert (run["status"]["phase"], run["status"]["reason"]) == ("TimedOut", "Timeout")
    cancelled = plane.counts / f"{name}.cancelled"
    wait_until(cancelled.exists, 30, "the handler saw the cancellation")


def test_a_cancelled_run_ends_canceled_and_its_handler_saw_the_cancellation(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "cancellable")
    # The handler waits at a gate that never opens, after its step and checkpoint: the
    # cancellation reaches it there (a cancel during a report is answered 409 to that report).
    gate = plane.counts / f"never-{tenant}"
    name = plane.submit(tenant, "cancellable", {"steps": 1, "gate": str(gate), "gate_after": 1})
    wait_until((plane.counts / f"{name}.waiting").exists, 30, "the handler at its gate")
    answer = plane.http.post(f"/api/v1/tenants/{tenant}/runs/{name}/cancel")
    assert answer.status_code == 200, answer.text
    run = plane.wait_run(tenant, name)
    assert (run["status"]["phase"], run["status"]["reason"]) == ("Canceled", "CanceledByUser")
    cancelled = plane.counts / f"{name}.cancelled"
    wait_until(cancelled.exists, 30, "the handler saw the cancellation")
    assert cancelled.read_text() == "canceled"
    again = plane.http.post(f"/api/v1/tenants/{tenant}/runs/{name}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "RUN_FINISHED"


def test_a_poison_run_fails_after_max_attempts_and_is_listed_as_a_dead_letter(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "poisoned", maxAttempts=3)
    name = plane.submit(tenant, "poisoned", {"steps": 1, "raise": True})
    run = plane.wait_run(tenant, name, timeout_s=90)
    status = run["status"]
    assert (status["phase"], status["reason"], status["attempt"]) == (
        "Failed",
        "HandlerError",
        3,
    )
    assert status["error"]["type"] == "RuntimeError"
    executed = [e for e in plane.effects() if e[0] == name]
    assert executed == [(name, 1, 1)], "the step before the error ran once, not per attempt"
    letters = subprocess.run(
        [*CLI, "outbox", "dlq", "list", "-o", "json"],
        env=plane.env, capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    assert f'"{run["metadata"]["uid"]}"' in letters, "the run's dispatch is a dead letter"


def test_concurrency_2_never_runs_more_than_2_at_once(plane: Plane) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "pair", concurrency=2)
    names = [plane.submit(tenant, "pair", {"steps": 1, "sleep": 0.6}) for _ in range(6)]
    for name in names:
        assert plane.wait_run(tenant, name)["status"]["phase"] == "Succeeded"
    spans = [
        line.split()
        for line in (plane.counts / "spans.log").read_text().splitlines()
        if line.split()[0] in names
    ]
    events = sorted((int(t), 1 if kind == "start" else -1) for _, kind, t in spans)
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 2


def test_queue_reject_answers_409_agent_busy_when_every_slot_is_busy(plane: Plane) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "single", concurrency=1, queue="reject")
    first = plane.submit(tenant, "single", {"steps": 1, "sleep": 30})
    refused = plane.http.post(
        f"/api/v1/tenants/{tenant}/agents/single/runs", json={"input": {"steps": 1}}
    )
    assert refused.status_code == 409 and refused.json()["code"] == "AGENT_BUSY"
    plane.http.post(f"/api/v1/tenants/{tenant}/runs/{first}/cancel")


def test_a_credential_of_agent_a_cannot_touch_agent_b_s_runs(plane: Plane) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "alpha")
    plane.apply_agent(tenant, "beta")
    theirs = plane.submit(tenant, "beta", {"steps": 1, "sleep": 30})
    wait_until(lambda: plane.run(tenant, theirs)["status"]["phase"] == "Running", 30, "Running")
    env = plane.sandbox_env(tenant, "alpha")
    gateway = httpx.Client(
        base_url=env["AGENTOS_GATEWAY_URL"],
        headers={"Authorization": f"Bearer {env['AGENTOS_AGENT_TOKEN']}"},
    )
    for path in ("heartbeat", "result", "checkpoint"):
        answer = gateway.post(f"/gateway/v1/runs/{theirs}/{path}", json={"state": 1})
        assert answer.status_code == 404, (path, answer.text)
    assert plane.run(tenant, theirs)["status"]["phase"] == "Running"
    api = httpx.get(
        f"{plane.base}/api/v1/tenants/{tenant}/runs/{theirs}",
        headers={"Authorization": f"Bearer {env['AGENTOS_AGENT_TOKEN']}"},
    )
    assert api.status_code == 401, "a sandbox credential never opens the API"
    anonymous = httpx.post(f"{env['AGENTOS_GATEWAY_URL']}/gateway/v1/runs:next", json={})
    assert anonymous.status_code == 401
    plane.http.post(f"/api/v1/tenants/{tenant}/runs/{theirs}/cancel")


def test_kill_9_of_serve_with_100_runs_in_flight_ends_every_run_exactly_once(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "bulk", concurrency=4, maxQueued=200)
    names = [plane.submit(tenant, "bulk", {"steps": 2}) for _ in range(100)]
    wait_until(
        lambda: len({e[0] for e in plane.effects() if e[0] in names}) >= 10,
        60,
        "some runs under way",
    )
    plane.kill()
    plane.start()
    for name in names:
        run = plane.wait_run(tenant, name, timeout_s=180)
        assert run["status"]["phase"] == "Succeeded", (name, run["status"])
    executed = Counter((e[0], e[1]) for e in plane.effects() if e[0] in names)
    assert executed == {(name, step): 1 for name in names for step in (1, 2)}


def test_the_sdk_agents_sandbox_holds_a_gateway_url_and_its_own_credential(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "creds")
    env = plane.sandbox_env(tenant, "creds")
    assert env["AGENTOS_GATEWAY_URL"].startswith("http://127.0.0.1:")
    assert env["AGENTOS_AGENT_TOKEN"].startswith("aosa_")
    assert "AGENTOS_DATABASE_URL" not in env and "AGENTOS_NATS_URL" not in env


def test_a_removed_sandbox_s_credential_is_revoked(plane: Plane) -> None:
    """restartPolicy Never: the failed sandbox is removed and none replaces it, so nothing
    but the removal revokes its credential (the stored row, not only the gateway's answer)."""
    tenant = tenant_name()
    plane.apply_agent(tenant, "revoked", restart_policy="Never")
    env = plane.sandbox_env(tenant, "revoked")
    sandbox = plane.agent(tenant, "revoked")["status"]["sandboxID"]
    # A run that does not exist: 404 to a valid credential, 401 to a revoked one.
    url = f"{env['AGENTOS_GATEWAY_URL']}/gateway/v1/runs/no-such-run/heartbeat"
    headers = {"Authorization": f"Bearer {env['AGENTOS_AGENT_TOKEN']}"}

    def status() -> int:
        return httpx.post(url, json={}, headers=headers).status_code

    assert status() == 404
    os.kill(plane.sandbox_pid(tenant, "revoked"), signal.SIGKILL)
    wait_until(
        lambda: plane.agent(tenant, "revoked")["status"].get("sandboxID") is None,
        60,
        "the failed sandbox removed",
    )
    assert plane.agent(tenant, "revoked")["status"]["phase"] == "Failed"
    wait_until(lambda: status() == 401, 10, "its credential refused")
    assert asyncio.run(_credential_revoked(plane, sandbox)) is True


async def _credential_revoked(plane: Plane, sandbox_id: str) -> bool:
    engine = create_async_engine(plane.env["AGENTOS_DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(agent_credentials.c.revoked_at).where(
                        agent_credentials.c.sandbox_id == sandbox_id
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    return bool(rows) and all(r.revoked_at is not None for r in rows)


def test_on_sqlite_with_the_embedded_nats_a_run_made_through_grpc_succeeds(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("sqlite-runs")
    control = Plane(tmp, f"sqlite+aiosqlite:///{tmp / 'agentos.db'}", None)
    control.start()
    try:
        tenant = tenant_name()
        control.apply_agent(tenant, "lite")
        channel = grpc.insecure_channel(f"127.0.0.1:{control.env['AGENTOS_GRPC_PORT']}")
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        request = run_service_pb2.CreateRunRequest(tenant=tenant, agent="lite")
        request.input.struct_value.update({"steps": 3})
        token = control.http.headers["Authorization"]
        made = stub.Create(request, metadata=(("authorization", token),), timeout=30)
        name = made.metadata.name
        run = control.wait_run(tenant, name)
        assert run["status"]["phase"] == "Succeeded", run["status"]
        assert [s["callId"] for s in control.steps(tenant, name)] == ["1", "2", "3"]
        got = stub.Get(
            run_service_pb2.GetRunRequest(tenant=tenant, name=name),
            metadata=(("authorization", token),),
            timeout=30,
        )
        assert json_format.MessageToDict(got.status)["phase"] == "Succeeded"
        channel.close()
    finally:
        control.stop()

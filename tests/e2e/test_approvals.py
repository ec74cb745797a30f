"""Approvals end to end (architecture/approvals.md): `agentos serve` on the real PostgreSQL
and NATS, an SDK agent with a destructive tool (tests/agents/approval_agent.py) in a process
sandbox, every side effect counted in a file.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format

from controlplane.api.grpc.gen import approval_service_pb2 as pb
from controlplane.api.grpc.gen import approval_service_pb2_grpc
from harness.waiting import wait_until
from tests.e2e.runs_plane import CLI, ROOT, Plane, started_plane, tenant_name

pytestmark = [pytest.mark.postgres, pytest.mark.nats]
AGENT = ROOT / "tests" / "agents" / "approval_agent.py"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, plane_database: str) -> Iterator[Plane]:
    with started_plane(tmp_path_factory.mktemp("approvals"), plane_database) as control:
        yield control


def _agent(plane: Plane, tenant: str, name: str = "deleter", **runs: Any) -> None:
    plane.apply_agent(tenant, name, agent_path=AGENT, approval="destructive", **runs)


def _waiting(plane: Plane, tenant: str, run: str, timeout_s: float = 60) -> dict[str, Any]:
    """The run's one pending approval, once the run is InputRequired."""
    wait_until(
        lambda: plane.run(tenant, run)["status"]["phase"] == "InputRequired",
        timeout_s,
        f"run {run} InputRequired",
    )
    answer = plane.http.get(f"/api/v1/tenants/{tenant}/runs/{run}/approvals?state=pending")
    assert answer.status_code == 200, answer.text
    [approval] = answer.json()["items"]
    return dict(approval)


def _decide(plane: Plane, tenant: str, run: str, approval: str, **body: Any) -> httpx.Response:
    return plane.http.post(f"/api/v1/tenants/{tenant}/runs/{run}/approvals/{approval}", json=body)


def _deleted(plane: Plane, run: str) -> list[str]:
    return [path for name, path, _ in plane.deleted() if name == run]


def test_a_destructive_tool_waits_and_runs_with_the_edited_arguments_once_approved(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    _agent(plane, tenant)
    run = plane.submit(tenant, "deleter", {"before": 2, "path": "/tmp/a", "after": 1})
    approval = _waiting(plane, tenant, run)
    assert (approval["action"], approval["state"]) == ("delete_file", "pending")
    assert approval["details"] == {"run": run, "path": "/tmp/a", "attempt": 1}
    assert _deleted(plane, run) == [], "nothing is deleted before the decision"
    listed = plane.http.get(f"/api/v1/tenants/{tenant}/approvals?state=pending").json()["items"]
    assert [a["id"] for a in listed] == [approval["id"]]
    answer = _decide(
        plane, tenant, run, approval["id"], decision="approve", edits={"path": "/tmp/b"},
        comment="b, not a",
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "approved"
    assert answer.json()["decidedBy"].startswith("runs-e2e (token ")
    done = plane.wait_run(tenant, run)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["output"] == {"deleted": "deleted /tmp/b", "attempt": 1}
    assert _deleted(plane, run) == ["/tmp/b"]
    tools = [(s["name"], s["input"]) for s in plane.steps(tenant, run)]
    assert ("delete_file", {"run": run, "path": "/tmp/b", "attempt": 1}) in tools
    audit = plane.http.get(f"/api/v1/tenants/{tenant}/audit").json()["items"]
    decided = [e for e in audit if e["action"] == "approval.approve"]
    assert [e["principal"] for e in decided] == [answer.json()["decidedBy"]]


def test_a_rejected_tool_does_not_run_and_the_handler_sees_the_rejection(plane: Plane) -> None:
    tenant = tenant_name()
    _agent(plane, tenant)
    run = plane.submit(tenant, "deleter", {"path": "/tmp/keep"})
    approval = _waiting(plane, tenant, run)
    answer = _decide(plane, tenant, run, approval["id"], decision="reject", comment="no")
    assert answer.status_code == 200, answer.text
    done = plane.wait_run(tenant, run)
    assert done["status"]["output"] == {"rejected": "rejected", "comment": "no"}
    assert _deleted(plane, run) == []


def test_an_expired_approval_is_a_rejection(plane: Plane) -> None:
    tenant = tenant_name()
    _agent(plane, tenant)
    run = plane.submit(tenant, "deleter", {"ask": True, "timeout": 2, "path": "/tmp/late"})
    approval = _waiting(plane, tenant, run)
    done = plane.wait_run(tenant, run, timeout_s=30)
    assert done["status"]["output"] == {"rejected": "expired", "comment": ""}
    [expired] = plane.http.get(f"/api/v1/tenants/{tenant}/runs/{run}/approvals").json()["items"]
    assert (expired["id"], expired["state"]) == (approval["id"], "expired")
    assert expired["decidedBy"] == "system:expiry"
    assert _deleted(plane, run) == []


def _cli(plane: Plane, *args: str) -> str:
    """`agentos ARGS` against the plane with its admin token: stdout."""
    token = str(plane.http.headers["Authorization"]).removeprefix("Bearer ")
    env = {**plane.env, "AGENTOS_API_URL": plane.base, "AGENTOS_TOKEN": token}
    done = subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _token(plane: Plane, tenant: str, role: str) -> str:
    return subprocess.run(
        [*CLI, "token", "create", "--principal", f"{role}-1", "--tenant", tenant, "--role", role],
        env=plane.env, capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    ).stdout.strip()  # fmt: skip


def test_a_viewer_cannot_decide_and_a_decided_approval_cannot_be_decided_again(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    _agent(plane, tenant)
    run = plane.submit(tenant, "deleter", {"path": "/tmp/v"})
    approval = _waiting(plane, tenant, run)
    url = f"{plane.base}/api/v1/tenants/{tenant}/runs/{run}/approvals/{approval['id']}"
    viewer = {"Authorization": f"Bearer {_token(plane, tenant, 'viewer')}"}
    refused = httpx.post(url, json={"decision": "approve"}, headers=viewer)
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "PERMISSION_DENIED"
    seen = httpx.get(f"{plane.base}/api/v1/tenants/{tenant}/approvals", headers=viewer)
    assert seen.status_code == 200 and seen.json()["items"][0]["state"] == "pending"
    editor = {"Authorization": f"Bearer {_token(plane, tenant, 'editor')}"}
    assert httpx.post(url, json={"decision": "reject"}, headers=editor).status_code == 200
    again = httpx.post(url, json={"decision": "approve"}, headers=editor)
    assert again.status_code == 409, again.text
    assert again.json()["code"] == "APPROVAL_DECIDED"
    assert plane.wait_run(tenant, run)["status"]["output"]["rejected"] == "rejected"
    assert _deleted(plane, run) == []


def test_the_gateway_refuses_a_destructive_step_without_its_approved_approval(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    _agent(plane, tenant)
    run = plane.submit(tenant, "deleter", {"path": "/tmp/forged"})
    approval = _waiting(plane, tenant, run)
    env = plane.sandbox_env(tenant, "deleter")
    gateway = httpx.Client(
        base_url=env["AGENTOS_GATEWAY_URL"],
        headers={"Authorization": f"Bearer {env['AGENTOS_AGENT_TOKEN']}"},
    )
    step = {
        "callId": approval["step"], "type": "tool", "name": "delete_file",
        "input": approval["details"], "status": "succeeded", "output": "deleted",
        "startedAt": "2026-01-01T00:00:00Z", "endedAt": "2026-01-01T00:00:01Z",
        "destructive": True,
    }  # fmt: skip
    for forged in (step, {**step, "approvalId": approval["id"]}):
        answer = gateway.post(f"/gateway/v1/runs/{run}/steps", json=forged)
        assert answer.status_code == 409, answer.text
        assert answer.json()["code"] == "APPROVAL_REQUIRED"
    assert all(s["name"] != "delete_file" for s in plane.steps(tenant, run))
    assert _decide(plane, tenant, run, approval["id"], decision="approve").status_code == 200
    other = {**step, "approvalId": approval["id"], "input": {**step["input"], "path": "/etc"}}
    answer = gateway.post(f"/gateway/v1/runs/{run}/steps", json=other)
    assert answer.status_code == 409, "an approval is for the arguments it approved"
    assert plane.wait_run(tenant, run)["status"]["phase"] == "Succeeded"
    assert _deleted(plane, run) == ["/tmp/forged"]


def test_kill_9_of_serve_while_waiting_keeps_the_run_waiting_and_it_continues_on_approval(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    _agent(plane, tenant)
    run = plane.submit(tenant, "deleter", {"before": 2, "path": "/tmp/s", "after": 1})
    approval = _waiting(plane, tenant, run)
    plane.kill()
    plane.start()
    assert plane.run(tenant, run)["status"]["phase"] == "InputRequired"
    assert _waiting(plane, tenant, run)["id"] == approval["id"]
    assert _decide(plane, tenant, run, approval["id"], decision="approve").status_code == 200
    done = plane.wait_run(tenant, run, timeout_s=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    executed = Counter(step for name, step, _ in plane.effects() if name == run)
    assert executed == {1: 1, 2: 1, 101: 1}, "the steps before the approval ran once"
    assert _deleted(plane, run) == ["/tmp/s"]
    approvals = plane.http.get(f"/api/v1/tenants/{tenant}/runs/{run}/approvals").json()["items"]
    assert len(approvals) == 1, "no attempt asked again"


def test_kill_9_of_the_sandbox_while_waiting_keeps_the_run_waiting_and_it_continues(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    _agent(plane, tenant)
    run = plane.submit(tenant, "deleter", {"before": 2, "path": "/tmp/x", "after": 1})
    approval = _waiting(plane, tenant, run)
    first = plane.sandbox_pid(tenant, "deleter")
    os.kill(first, signal.SIGKILL)
    wait_until(
        lambda: (
            plane.agent(tenant, "deleter")["status"]["phase"] == "Ready"
            and plane.sandbox_pid(tenant, "deleter") != first
        ),
        90,
        "a new sandbox",
    )
    wait_until(lambda: plane.run(tenant, run)["status"]["attempt"] >= 2, 90, "attempt 2")
    assert plane.run(tenant, run)["status"]["phase"] == "InputRequired"
    listed = _cli(plane, "get", "approvals", "-n", tenant)
    assert approval["id"] in listed and "delete_file" in listed
    approved = _cli(plane, "approve", "run", run, "-n", tenant, "--comment", "go")
    assert f"approval/{approval['id']} of run/{run} approved" in approved
    done = plane.wait_run(tenant, run, timeout_s=60)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["attempt"] >= 2
    executed = Counter(step for name, step, _ in plane.effects() if name == run)
    assert executed == {1: 1, 2: 1, 101: 1}, "the steps before the approval ran once"
    assert _deleted(plane, run) == ["/tmp/x"]
    approvals = plane.http.get(f"/api/v1/tenants/{tenant}/runs/{run}/approvals").json()["items"]
    assert len(approvals) == 1, "the new attempt did not ask again"


def test_grpc_lists_and_decides_approvals_and_refuses_a_viewer(plane: Plane) -> None:
    tenant = tenant_name()
    _agent(plane, tenant)
    run = plane.submit(tenant, "deleter", {"path": "/tmp/g"})
    approval = _waiting(plane, tenant, run)
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.env['AGENTOS_GRPC_PORT']}")
    stub = approval_service_pb2_grpc.ApprovalServiceStub(channel)
    admin = (("authorization", str(plane.http.headers["Authorization"])),)
    viewer = (("authorization", f"Bearer {_token(plane, tenant, 'viewer')}"),)
    listed = stub.ListApprovals(
        pb.ListApprovalsRequest(tenant=tenant, state="pending"), metadata=viewer, timeout=30
    )
    assert [json_format.MessageToDict(a)["id"] for a in listed.approvals] == [approval["id"]]
    decide = pb.DecideApprovalRequest(
        tenant=tenant, run=run, approval=approval["id"], decision="approve"
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.DecideApproval(decide, metadata=viewer, timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    decide.edits.update({"path": "/tmp/g2"})
    decided = json_format.MessageToDict(stub.DecideApproval(decide, metadata=admin, timeout=30))
    assert (decided["state"], decided["arguments"]["path"]) == ("approved", "/tmp/g2")
    with pytest.raises(grpc.RpcError) as again:
        stub.DecideApproval(decide, metadata=admin, timeout=30)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    channel.close()
    assert plane.wait_run(tenant, run)["status"]["phase"] == "Succeeded"
    assert _deleted(plane, run) == ["/tmp/g2"]


def test_a_waiting_run_canceled_ends_canceled_and_its_approval_expires(plane: Plane) -> None:
    tenant = tenant_name()
    _agent(plane, tenant)
    run = plane.submit(tenant, "deleter", {"path": "/tmp/c"})
    approval = _waiting(plane, tenant, run)
    assert plane.http.post(f"/api/v1/tenants/{tenant}/runs/{run}/cancel").status_code == 200
    assert plane.wait_run(tenant, run)["status"]["phase"] == "Canceled"

    def expired() -> bool:
        url = f"/api/v1/tenants/{tenant}/runs/{run}/approvals"
        return bool(plane.http.get(url).json()["items"][0]["state"] == "expired")

    wait_until(expired, 30, "the approval of the canceled run expired")
    late = _decide(plane, tenant, run, approval["id"], decision="approve")
    assert late.status_code == 409, late.text
    assert _deleted(plane, run) == []

"""Replay end to end (architecture/replay.md): `agentos serve` on the real PostgreSQL and
NATS, an SDK agent of five tool steps (tests/agents/replay_agent.py) in a process sandbox,
every tool execution counted in a file.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from controlplane.api.grpc.gen import approval_service_pb2 as pb
from controlplane.api.grpc.gen import approval_service_pb2_grpc
from tests.e2e.runs_plane import CLI, ROOT, Plane, started_plane, tenant_name

pytestmark = [pytest.mark.postgres, pytest.mark.nats]
AGENT = ROOT / "tests" / "agents" / "replay_agent.py"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, plane_database: str) -> Iterator[Plane]:
    with started_plane(tmp_path_factory.mktemp("replay"), plane_database) as control:
        yield control


def _origin(plane: Plane, tenant: str) -> str:
    """A finished 5-step run of a fresh agent `replayer`."""
    plane.apply_agent(tenant, "replayer", agent_path=AGENT)
    name = plane.submit(tenant, "replayer", {"steps": 5})
    done = plane.wait_run(tenant, name)
    assert done["status"]["output"] == {"total": 15}, done["status"]
    return name


def _replay(plane: Plane, tenant: str, run: str, **body: Any) -> dict[str, Any]:
    answer = plane.http.post(f"/api/v1/tenants/{tenant}/runs/{run}/replay", json=body)
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = plane.wait_run(tenant, answer.json()["metadata"]["name"])
    return made


def _executed(plane: Plane, run: str) -> Counter[int]:
    return Counter(step for name, step, _ in plane.effects() if name == run)


def test_a_recorded_replay_makes_no_side_effect_and_ends_with_the_same_output(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    origin = _origin(plane, tenant)
    replay = _replay(plane, tenant, origin, mode="recorded")
    name = replay["metadata"]["name"]
    assert replay["status"]["phase"] == "Succeeded", replay["status"]
    assert replay["status"]["output"] == {"total": 15}
    assert replay["status"]["replayOf"]["name"] == origin
    assert replay["status"]["replayOf"]["mode"] == "recorded"
    assert replay["status"]["divergences"] == []
    assert _executed(plane, name) == Counter(), "every step came from the journal"
    assert _executed(plane, origin) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    token = str(plane.http.headers["Authorization"]).removeprefix("Bearer ")
    env = {**plane.env, "AGENTOS_API_URL": plane.base, "AGENTOS_TOKEN": token}
    shown = subprocess.run(
        [*CLI, "describe", "run", name, "-n", tenant],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT, check=True,
    ).stdout  # fmt: skip
    assert f"Replay of:     {origin} (recorded)" in shown
    assert "(from the journal)" in shown


def test_a_changed_agent_reports_the_divergent_step_with_both_calls_then_runs_live(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    origin = _origin(plane, tenant)
    (plane.counts / "replayer.diverge").touch()  # the agent now calls step 3 otherwise
    try:
        replay = _replay(plane, tenant, origin, mode="recorded")
    finally:
        (plane.counts / "replayer.diverge").unlink()
    name = replay["metadata"]["name"]
    assert replay["status"]["phase"] == "Succeeded", replay["status"]
    [divergence] = replay["status"]["divergences"]
    assert (divergence["step"], divergence["callId"]) == (3, "3")
    assert divergence["recorded"] == {
        "type": "tool", "name": "effect", "input": {"step": 3, "double": False},
    }  # fmt: skip
    assert divergence["actual"]["input"] == {"step": 3, "double": True}
    assert _executed(plane, name) == {3: 1, 4: 1, 5: 1}, "live from the divergence on"
    assert replay["status"]["output"] == {"total": 18}


def test_a_replay_from_step_3_serves_steps_1_2_and_executes_3_to_5_live(plane: Plane) -> None:
    tenant = tenant_name()
    origin = _origin(plane, tenant)
    replay = _replay(plane, tenant, origin, mode="recorded", fromStep=3)
    name = replay["metadata"]["name"]
    assert replay["status"]["output"] == {"total": 15}
    assert replay["status"]["replayOf"]["fromStep"] == 3
    assert _executed(plane, name) == {3: 1, 4: 1, 5: 1}
    assert [s["callId"] for s in plane.steps(tenant, name)] == ["3", "4", "5"]


def test_a_live_replay_executes_every_step_again(plane: Plane) -> None:
    tenant = tenant_name()
    origin = _origin(plane, tenant)
    replay = _replay(plane, tenant, origin, mode="live")
    assert _executed(plane, replay["metadata"]["name"]) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}


def test_grpc_replays_a_run_as_rest_does(plane: Plane) -> None:
    tenant = tenant_name()
    origin = _origin(plane, tenant)
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.env['AGENTOS_GRPC_PORT']}")
    stub = approval_service_pb2_grpc.ReplayServiceStub(channel)
    token = (("authorization", str(plane.http.headers["Authorization"])),)
    made = stub.Replay(pb.ReplayRunRequest(tenant=tenant, run=origin), metadata=token, timeout=30)
    channel.close()
    done = plane.wait_run(tenant, made.metadata.name)
    assert done["status"]["replayOf"]["name"] == origin
    assert _executed(plane, made.metadata.name) == Counter()

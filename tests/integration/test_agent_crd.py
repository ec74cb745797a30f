"""The Agent CRD on the real kube-apiserver: installed from deploy/crds, it takes a valid
Agent, shows the printer columns, and refuses what the API's own validation refuses, naming
the field."""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.domain.agents.model import parse_agent
from controlplane.domain.errors import ValidationFailed
from harness.waiting import wait_until
from tests.conftest import service_setting

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "deploy" / "crds" / "agents.agentos.io.yaml"
SERVICE = "Kubernetes (kube-apiserver, etcd, KWOK)"


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            service_setting("AGENTOS_KUBECTL", SERVICE),
            "--kubeconfig",
            service_setting("KUBECONFIG", SERVICE),
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def crd_installed() -> None:
    applied = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    assert applied.returncode == 0, applied.stderr

    def established() -> bool:
        got = kubectl("get", "crd", "agents.agentos.io", "-o", "json")
        conditions = json.loads(got.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_until(established, 30, "the Agent CRD to be Established")


@pytest.fixture
def agent(crd_installed: None) -> Iterator[dict[str, Any]]:
    name = f"crd-{uuid.uuid4().hex[:8]}"
    manifest = yaml.safe_load((ROOT / "examples" / "agents" / "runc-agent.yaml").read_text())
    manifest["metadata"] = {"name": name, "namespace": "default"}
    yield manifest
    kubectl("delete", "agent", name, "-n", "default", "--ignore-not-found", "--wait=false")


def test_a_valid_agent_is_accepted_and_listed_with_its_columns(agent: dict[str, Any]) -> None:
    parse_agent(agent)
    applied = kubectl("apply", "--validate=strict", "-f", "-", stdin=yaml.safe_dump(agent))
    assert applied.returncode == 0, applied.stderr
    listed = kubectl("get", "ag", agent["metadata"]["name"], "-n", "default")
    assert listed.returncode == 0, listed.stderr
    header = listed.stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "RUNTIME", "NODE", "READY", "AGE"]
    assert listed.stdout.splitlines()[1].split()[1] == "runc"  # no status yet: runtime follows


def test_the_apiserver_defaults_spec_runs_as_the_model_does(agent: dict[str, Any]) -> None:
    agent["spec"]["runs"] = {"concurrency": 2}
    applied = kubectl("apply", "--validate=strict", "-f", "-", stdin=yaml.safe_dump(agent))
    assert applied.returncode == 0, applied.stderr
    got = kubectl("get", "agent", agent["metadata"]["name"], "-n", "default", "-o", "json")
    assert got.returncode == 0, got.stderr
    stored = json.loads(got.stdout)["spec"]["runs"]
    assert stored == parse_agent(agent).spec.runs.model_dump(mode="json")


def _two_probes(m: dict[str, Any]) -> None:
    m["spec"]["readiness"] = {"exec": {"command": ["true"]}, "heartbeat": {}}


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("unknown field", lambda m: m["spec"].update(colour="blue"), "/spec/colour", "spec.colour"),
    (
        "bad quantity",
        lambda m: m["spec"].update(resources={"limits": {"cpu": "lots"}}),
        "/spec/resources/limits/cpu",
        "spec.resources.limits.cpu",
    ),
    (
        "unknown runtime class",
        lambda m: m["spec"].update(runtime={"class": "kata"}),
        "/spec/runtime/class",
        "spec.runtime.class",
    ),
    (
        "name not DNS-1123",
        lambda m: m["metadata"].update(name="not.a-label"),
        "/metadata/name",
        "metadata.name",
    ),
    ("missing image", lambda m: m["spec"].pop("image"), "/spec/image", "spec.image"),
    (
        "relative archive",
        lambda m: m["spec"].update(image="oci-archive:a.tar"),
        "/spec/image",
        "spec.image",
    ),
    ("two readiness actions", _two_probes, "/spec/readiness", "spec.readiness"),
    (
        "no run slot",
        lambda m: m["spec"].update(runs={"concurrency": 0}),
        "/spec/runs/concurrency",
        "spec.runs.concurrency",
    ),
    (
        "unknown queue policy",
        lambda m: m["spec"].update(runs={"queue": "drop"}),
        "/spec/runs/queue",
        "spec.runs.queue",
    ),
    (
        "egress wildcard inside a name",
        lambda m: m["spec"].update(network={"egress": [{"host": "a.*.example", "ports": [443]}]}),
        "/spec/network/egress/0/host",
        "spec.network.egress[0].host",
    ),
    (
        "egress port out of range",
        lambda m: m["spec"].update(network={"egress": [{"host": "a.example", "ports": [0]}]}),
        "/spec/network/egress/0/ports",
        "spec.network.egress[0].ports",
    ),
    (
        "egress without ports",
        lambda m: m["spec"].update(network={"egress": [{"host": "a.example", "ports": []}]}),
        "/spec/network/egress/0/ports",
        "spec.network.egress[0].ports",
    ),
]


@pytest.mark.parametrize(("case", "edit", "pointer", "field"), BAD, ids=[b[0] for b in BAD])
def test_the_apiserver_and_the_api_refuse_the_same_bad_agents_naming_the_field(
    agent: dict[str, Any],
    case: str,
    edit: Callable[[dict[str, Any]], None],
    pointer: str,
    field: str,
) -> None:
    bad = copy.deepcopy(agent)
    edit(bad)
    with pytest.raises(ValidationFailed) as caught:
        parse_agent(bad)
    assert any(e.pointer.startswith(pointer) for e in caught.value.errors), caught.value.errors
    applied = kubectl("apply", "--validate=strict", "-f", "-", stdin=yaml.safe_dump(bad))
    assert applied.returncode != 0, f"{case}: the apiserver took it"
    assert field in applied.stderr, applied.stderr
    got = kubectl("get", "agent", bad["metadata"]["name"], "-n", "default")
    assert got.returncode != 0, "nothing was created"


def test_the_apiserver_takes_the_egress_the_api_takes(agent: dict[str, Any]) -> None:
    egress = [{"host": "api.example.com", "ports": [443]}, {"host": "*.cdn.test", "ports": [80]}]
    agent["spec"]["network"] = {"egress": egress}
    assert parse_agent(agent).spec.network.model_dump(mode="json") == {"egress": egress}
    applied = kubectl("apply", "--validate=strict", "-f", "-", stdin=yaml.safe_dump(agent))
    assert applied.returncode == 0, applied.stderr
    got = kubectl("get", "agent", agent["metadata"]["name"], "-n", "default", "-o", "json")
    assert json.loads(got.stdout)["spec"]["network"] == {"egress": egress}

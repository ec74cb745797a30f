"""The Kubernetes runtime's pure parts: the Pod it asks for, how it reads Pods and Nodes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from controlplane.domain.quantity import parse_quantity
from controlplane.runtimes.base import ProbeSpec, SandboxError, SandboxSpec, SandboxState
from controlplane.runtimes.kubernetes.pods import (
    CONFIG_FIELD,
    pod_manifest,
    pod_ready,
    pod_status,
    readiness_probe,
)
from controlplane.runtimes.kubernetes.runtime import node_capacity


def spec(**changes: Any) -> SandboxSpec:
    base: dict[str, Any] = {
        "sandbox_id": "t1-web-0123abcd-1-0",
        "agent_id": "0123abcd-0000",
        "tenant": "t1",
        "name": "web",
        "image": "registry.example/web:1",
        "runtime_class": "gvisor",
        "env": {"A": "1"},
        "cpu_millis": 500,
        "memory_bytes": 128 * 2**20,
        "request_cpu_millis": 100,
        "request_memory_bytes": 64 * 2**20,
        "config": {"model": "small"},
        "probe": ProbeSpec(http_port=8080, http_path="/ready", period_s=2),
        "node": "node-7",
        "annotations": {"agentos.io/kubernetes-uid": "uid-1"},
    }
    return SandboxSpec(**{**base, **changes})


def test_pod_runs_in_the_runtime_class_with_requests_limits_and_the_owner() -> None:
    pod = pod_manifest(spec())
    meta, body = pod["metadata"], pod["spec"]
    (container,) = body["containers"]
    assert (meta["name"], meta["namespace"]) == ("t1-web-0123abcd-1-0", "t1")
    assert body["runtimeClassName"] == "gvisor"
    assert body["schedulerName"] == "agentos" and "nodeName" not in body
    assert meta["annotations"]["agentos.io/node"] == "node-7"
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": str(64 * 2**20)},
        "limits": {"cpu": "500m", "memory": str(128 * 2**20)},
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "agentos.io/v1alpha1",
            "kind": "Agent",
            "name": "web",
            "uid": "uid-1",
            "controller": True,
        }
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8080}
    assert json.loads(meta["annotations"]["agentos.io/config"]) == {"model": "small"}
    (config,) = [v for v in body["volumes"] if v["name"] == "config"]
    assert config["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == CONFIG_FIELD


def test_pod_is_hardened_to_the_restricted_profile() -> None:
    body = pod_manifest(spec())["spec"]
    (container,) = body["containers"]
    assert body["securityContext"]["runAsNonRoot"] is True
    assert body["securityContext"]["runAsUser"] != 0
    assert body["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert body["automountServiceAccountToken"] is False
    assert body["restartPolicy"] == "Never"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_process_class_uses_the_node_default_runtime_and_no_owner_without_a_resource() -> None:
    pod = pod_manifest(spec(runtime_class="process", annotations={}))
    assert "runtimeClassName" not in pod["spec"]
    assert "ownerReferences" not in pod["metadata"]


def test_local_archive_images_are_refused() -> None:
    with pytest.raises(SandboxError) as raised:
        pod_manifest(spec(image="oci-archive:/srv/agent.tar"))
    assert raised.value.reason == "InvalidImage"


def test_heartbeat_readiness_checks_the_heartbeat_file_age() -> None:
    probe = readiness_probe(ProbeSpec(heartbeat=True, period_s=1, failure_threshold=3))
    command = probe["exec"]["command"]
    assert command[:2] == ["sh", "-c"] and "-3 seconds" in command[2]


def pod(phase: str = "Running", node: str | None = "n1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": "t", **extra.pop("metadata", {})},
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, **extra},
    }
    return body


def test_pod_states_map_to_sandbox_states() -> None:
    assert pod_status("p", None).state is SandboxState.MISSING
    assert pod_status("p", pod("Pending", node=None)).state is SandboxState.CREATED
    assert pod_status("p", pod("Pending")).state is SandboxState.RUNNING
    assert pod_status("p", pod("Running")).state is SandboxState.RUNNING
    failed = pod(
        "Failed",
        containerStatuses=[{"state": {"terminated": {"exitCode": 3}}}],
    )
    assert (pod_status("p", failed).state, pod_status("p", failed).exit_code) == (
        SandboxState.EXITED,
        3,
    )
    going = pod(metadata={"deletionTimestamp": "2026-01-01T00:00:00Z"})
    assert pod_status("p", going).state is SandboxState.EXITED


def test_pod_is_ready_only_with_a_true_ready_condition() -> None:
    assert not pod_ready(pod())
    assert not pod_ready(pod(conditions=[{"type": "Ready", "status": "False"}]))
    assert pod_ready(pod(conditions=[{"type": "Ready", "status": "True"}]))


def node(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "n1"},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "3800m", "memory": "16264020Ki", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    for key, value in changes.items():
        body[key] = {**body[key], **value}
    return body


def test_node_capacity_is_its_allocatable_when_ready_and_schedulable() -> None:
    capacity = node_capacity(node())
    assert capacity is not None
    assert (capacity.cpu_millis, capacity.memory_bytes, capacity.max_agents) == (
        3800,
        16264020 * 1024,
        110,
    )
    assert node_capacity(node(spec={"unschedulable": True})) is None
    tainted = {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]}
    assert node_capacity(node(spec=tainted)) is None
    not_ready = {"conditions": [{"type": "Ready", "status": "False"}]}
    assert node_capacity(node(status=not_ready)) is None


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("1k", 1000), ("3800m", Decimal("3.8")), ("1Ki", 1024), ("1e3", 1000), ("2", 2)],
)
def test_parse_quantity_reads_what_nodes_report(quantity: str, value: Decimal) -> None:
    assert parse_quantity(quantity) == value


def test_parse_quantity_names_a_bad_quantity() -> None:
    with pytest.raises(ValueError, match="'lots'"):
        parse_quantity("lots")

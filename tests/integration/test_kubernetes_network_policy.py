"""The Kubernetes runtime fences agent Pods with a NetworkPolicy, on the real test apiserver.

Run as the controller's ServiceAccount with deploy/rbac's rules (so the RBAC is exercised
too): creating sandboxes in a tenant namespace applies the policy `agentos-agents` there once,
before the first Pod; its selectors select the Pods as stored; another runtime (a restarted
controller) applies it again without changing it; the account may patch no other policy; the
gateway's host name reaches the Pod as hostAliases. The test cluster's nodes are KWOK's and
its network is no CNI's, so nothing is enforced here: what the apiserver stores and
validates is what is checked (architecture/kubernetes.md). The namespace is deleted after.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient, KubeConfig

from controlplane.runtimes.base import SandboxError, SandboxSpec
from controlplane.runtimes.kubernetes.network import AgentNetwork, AgentPolicies
from controlplane.runtimes.kubernetes.runtime import KubernetesRuntime
from harness import kube as kc

pytestmark = pytest.mark.kube

POLICY = "agentos-agents"


@pytest.fixture(scope="module")
def controller_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kc.install()
    return kc.service_account_kubeconfig(
        "agentos-controller", tmp_path_factory.mktemp("kube") / "controller.yaml"
    )


@pytest.fixture
def tenant() -> Iterator[str]:
    name = kc.tenant_namespace("netpol")
    yield name
    kc.delete_namespace(name)


def client_of(kubeconfig: Path) -> AsyncClient:
    return AsyncClient(KubeConfig.from_file(str(kubeconfig)), field_manager="agentos-controller")


def sandbox(tenant: str, n: int) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id=f"{tenant}-web-{n}",
        agent_id=f"agent-{n}",
        tenant=tenant,
        name=f"web-{n}",
        image="registry.example/web:1",
        runtime_class="runc",
        # The host's own name resolves here as a Service name does in a cluster.
        env={"AGENTOS_GATEWAY_URL": f"http://{socket.gethostname()}:8091"},
        request_cpu_millis=10,
        node="nowhere",
    )


async def create_sandboxes(kubeconfig: Path, specs: list[SandboxSpec], instance: str) -> None:
    runtime = KubernetesRuntime(
        client_of(kubeconfig), instance=instance, network=AgentNetwork("agentos-system")
    )
    try:
        for spec in specs:
            await runtime.create(spec)
    finally:
        await runtime.close()


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def policies(namespace: str) -> list[dict[str, Any]]:
    found = kc.kubectl_json("get", "networkpolicy", "-n", namespace, "--show-managed-fields")
    items: list[dict[str, Any]] = found["items"]
    return items


def test_the_runtime_applies_the_policy_once_and_it_selects_its_pods(
    controller_kubeconfig: Path, tenant: str
) -> None:
    instance = f"np-{uuid.uuid4().hex[:8]}"
    specs = [sandbox(tenant, n) for n in range(3)]
    asyncio.run(create_sandboxes(controller_kubeconfig, specs[:2], instance))
    (policy,) = policies(tenant)
    assert policy["metadata"]["name"] == POLICY
    managers = {f["manager"] for f in policy["metadata"]["managedFields"]}
    assert managers == {"agentos-controller"}
    first_version = policy["metadata"]["resourceVersion"]

    pods = kc.kubectl_json("get", "pods", "-n", tenant)["items"]
    assert len(pods) == 2
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert all(selects(selector, p["metadata"]["labels"]) for p in pods)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (egress,) = policy["spec"]["egress"]  # the gateway only: no DNS rule
    assert {p["port"] for p in egress["ports"]} == {8091, 8092}
    (peer,) = egress["to"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    host = socket.gethostname()
    for pod in pods:
        assert {h for a in pod["spec"]["hostAliases"] for h in a["hostnames"]} == {host}

    # A restarted controller applies it again: the same object, unchanged.
    asyncio.run(create_sandboxes(controller_kubeconfig, specs[2:], instance))
    (again,) = policies(tenant)
    assert again["metadata"]["resourceVersion"] == first_version
    assert len(kc.kubectl_json("get", "pods", "-n", tenant)["items"]) == 3


def test_the_controller_may_patch_no_other_policy(controller_kubeconfig: Path, tenant: str) -> None:
    async def apply_other() -> None:
        client = client_of(controller_kubeconfig)
        try:
            other = AgentNetwork("agentos-system", policy_name="something-else")
            await AgentPolicies(client, other).ensure(tenant)
        finally:
            await client.close()

    with pytest.raises(SandboxError) as raised:
        asyncio.run(apply_other())
    assert raised.value.reason == "NetworkPolicyFailed"
    assert "forbidden" in raised.value.message.lower()
    assert policies(tenant) == []

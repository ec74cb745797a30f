"""What agent Pods may reach on Kubernetes (controlplane/runtimes/kubernetes/network.py): the
NetworkPolicy's shape, its settings, and the gateway's host aliases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controlplane.runtimes.base import SandboxError, SandboxSpec
from controlplane.runtimes.kubernetes.network import (
    AgentNetwork,
    GatewayAliases,
    agent_network_policy,
    parse_selector,
)
from controlplane.runtimes.kubernetes.pods import pod_manifest


def spec(env: dict[str, str] | None = None) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id="t1-web-0123abcd-1-0",
        agent_id="0123abcd-0000",
        tenant="t1",
        name="web",
        image="registry.example/web:1",
        runtime_class="runc",
        env=env or {},
    )


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_the_policy_selects_the_agent_pods_and_allows_only_the_gateway_ports() -> None:
    network = AgentNetwork(system_namespace="agentos-system")
    policy = agent_network_policy("t1", network)
    assert (policy["metadata"]["name"], policy["metadata"]["namespace"]) == ("agentos-agents", "t1")
    body = policy["spec"]
    pod_labels = pod_manifest(spec())["metadata"]["labels"]
    assert selects(body["podSelector"]["matchLabels"], pod_labels)
    assert body["policyTypes"] == ["Ingress", "Egress"]
    (egress,) = body["egress"]
    (gateway,) = egress["to"]
    assert gateway["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "agentos-system"}
    }
    assert gateway["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert egress["ports"] == [{"protocol": "TCP", "port": 8091}, {"protocol": "TCP", "port": 8092}]
    (ingress,) = body["ingress"]
    (controller,) = ingress["from"]
    assert controller["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "controller"


def test_dns_is_allowed_only_when_asked() -> None:
    policy = agent_network_policy("t1", AgentNetwork(allow_dns=True))
    _, dns = policy["spec"]["egress"]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}


def test_settings_come_from_the_environment() -> None:
    network = AgentNetwork.from_env(
        {
            "AGENTOS_KUBERNETES_SYSTEM_NAMESPACE": "blue-ns",
            "AGENTOS_KUBERNETES_GATEWAY_SELECTOR": "a=1,b=2",
            "AGENTOS_KUBERNETES_GATEWAY_PORTS": "9001,9002",
            "AGENTOS_KUBERNETES_AGENT_DNS": "true",
            "AGENTOS_KUBERNETES_AGENT_POLICY": "blue-agentos-agents",
        }
    )
    assert network is not None
    assert network.system_namespace == "blue-ns"
    assert dict(network.gateway_labels) == {"a": "1", "b": "2"}
    assert network.gateway_ports == (9001, 9002)
    assert network.allow_dns is True
    assert network.policy_name == "blue-agentos-agents"
    defaults = AgentNetwork.from_env({})
    assert defaults is not None and defaults.policy_name == "agentos-agents"
    assert defaults.allow_dns is False and defaults.gateway_ports == (8091, 8092)
    assert AgentNetwork.from_env({"AGENTOS_KUBERNETES_NETWORK_POLICY": "false"}) is None


def test_a_malformed_selector_is_refused() -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_selector("a=1,b")


def test_host_aliases_name_the_gateway_and_proxy_hosts_but_not_ip_literals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolved = {"agentos-gateway.agentos-system.svc": ["10.96.0.7"]}

    async def addresses(self: GatewayAliases, host: str) -> list[str]:
        return resolved[host]

    monkeypatch.setattr(GatewayAliases, "_addresses", addresses)
    env = {
        "AGENTOS_GATEWAY_URL": "http://agentos-gateway.agentos-system.svc:8091",
        "HTTP_PROXY": "http://agentos-gateway.agentos-system.svc:8092",
        "HTTPS_PROXY": "http://10.0.0.1:8092",
        "http_proxy": "http://localhost:8092",
        "OTHER_URL": "http://elsewhere.example",
    }
    aliases = asyncio.run(GatewayAliases().for_env(env))
    assert aliases == [{"ip": "10.96.0.7", "hostnames": ["agentos-gateway.agentos-system.svc"]}]
    assert asyncio.run(GatewayAliases().for_env({"AGENTOS_GATEWAY_URL": "http://[::1]:1"})) == []


def test_an_unresolvable_gateway_fails_the_create() -> None:
    env = {"AGENTOS_GATEWAY_URL": "http://no-such-host.invalid:8091"}
    with pytest.raises(SandboxError) as raised:
        asyncio.run(GatewayAliases().for_env(env))
    assert raised.value.reason == "GatewayUnresolvable"


def test_the_pod_carries_the_host_aliases() -> None:
    aliases: list[dict[str, Any]] = [{"ip": "10.96.0.7", "hostnames": ["gw.ns.svc"]}]
    assert pod_manifest(spec(), host_aliases=aliases)["spec"]["hostAliases"] == aliases
    assert "hostAliases" not in pod_manifest(spec())["spec"]

"""What an agent Pod may reach on the network: the NetworkPolicy the Kubernetes runtime
applies in each namespace it runs agents in, and the gateway's address given to the Pod.

The policy (one per namespace, named `agentos-agents` or AGENTOS_KUBERNETES_AGENT_POLICY; the
chart renders the same object as `<release>-agents`,
charts/agentos/templates/networkpolicies.yaml) selects every Agent OS agent Pod
(`agentos.io/managed=true`) and
- denies all egress except TCP to the gateway Pods (the run protocol and the model proxy on
  8091, the egress proxy on 8092) in the control plane's namespace: everything else an agent
  reaches, it reaches through the egress proxy and its allowlist (`spec.network.egress`);
- denies all ingress except from the controller's Pods (kubelet probes come from the node,
  which the usual CNIs do not filter);
- allows no DNS unless `AGENTOS_KUBERNETES_AGENT_DNS=true`: DNS to kube-dns is a channel out
  (queries for names under a domain one controls reach that domain's servers), and the
  proxy resolves the names it connects to itself. The Pod finds the gateway by
  `hostAliases` instead: the host names in its gateway and proxy URLs, resolved by the
  controller (to the Service's ClusterIP, stable for the Service's life), are written to
  its /etc/hosts.

It is applied server-side (field manager `agentos-controller`, forced), before the first Pod
of a namespace is created and once per namespace per process: a second apply of the same
object changes nothing, and a changed configuration (another gateway port) reaches the
policy at the controller's next start. RBAC: `create` on networkpolicies and `patch` of
this one name (an apply that creates needs both; deploy/rbac/controller.yaml). Enforcement
is the CNI's (Calico, Cilium, ...); one without NetworkPolicy support (kindnet, flannel,
KWOK's fake nodes) stores the policy and enforces nothing (architecture/kubernetes.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from lightkube import ApiError, AsyncClient
from lightkube.resources.networking_v1 import NetworkPolicy

from controlplane.runtimes.base import LABEL_MANAGED, SandboxError

FIELD_MANAGER = "agentos-controller"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
GATEWAY_SELECTOR = (
    "app.kubernetes.io/name=agentos,app.kubernetes.io/instance=agentos,"
    "app.kubernetes.io/component=gateway"
)
CONTROLLER_SELECTOR = GATEWAY_SELECTOR.replace("=gateway", "=controller")
# The sandbox's environment variables that hold a URL it must reach (architecture/
# gateway-protocol.md: the gateway; the egress proxy's HTTP(S)_PROXY).
URL_VARIABLES = ("AGENTOS_GATEWAY_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}


def parse_selector(text: str) -> dict[str, str]:
    """`k=v,k=v` as a label map. Raises ValueError for an item without `=` or an empty one."""
    labels: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise ValueError(f"not a label selector item (key=value): {item!r}")
        labels[key] = value
    return labels


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class AgentNetwork:
    """Where agent Pods' traffic may go: the gateway Pods (labels `gateway_labels` in
    `system_namespace`, TCP `gateway_ports`), from the controller Pods only, DNS if
    `allow_dns`. `policy_name` names the NetworkPolicy in each agent namespace."""

    system_namespace: str = "agentos-system"
    gateway_labels: Mapping[str, str] = field(
        default_factory=lambda: parse_selector(GATEWAY_SELECTOR)
    )
    gateway_ports: tuple[int, ...] = (8091, 8092)
    controller_labels: Mapping[str, str] = field(
        default_factory=lambda: parse_selector(CONTROLLER_SELECTOR)
    )
    allow_dns: bool = False
    policy_name: str = "agentos-agents"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AgentNetwork | None:
        """From AGENTOS_KUBERNETES_* (the chart sets them on the controller): NETWORK_POLICY
        (default true; false: None, no policy and no host aliases), SYSTEM_NAMESPACE (default
        the Pod's own, else agentos-system), GATEWAY_SELECTOR and CONTROLLER_SELECTOR
        (`k=v,...`), GATEWAY_PORTS (`8091,8092`), AGENT_DNS (default false), AGENT_POLICY
        (default `agentos-agents`, the name deploy/rbac may patch). Raises ValueError for a
        malformed value."""
        env = os.environ if environ is None else environ
        if not _flag(env.get("AGENTOS_KUBERNETES_NETWORK_POLICY", "true")):
            return None
        ports = env.get("AGENTOS_KUBERNETES_GATEWAY_PORTS", "8091,8092")
        return cls(
            system_namespace=env.get("AGENTOS_KUBERNETES_SYSTEM_NAMESPACE") or _own_namespace(),
            gateway_labels=parse_selector(
                env.get("AGENTOS_KUBERNETES_GATEWAY_SELECTOR", GATEWAY_SELECTOR)
            ),
            gateway_ports=tuple(int(p) for p in ports.split(",") if p.strip()),
            controller_labels=parse_selector(
                env.get("AGENTOS_KUBERNETES_CONTROLLER_SELECTOR", CONTROLLER_SELECTOR)
            ),
            allow_dns=_flag(env.get("AGENTOS_KUBERNETES_AGENT_DNS", "false")),
            policy_name=env.get("AGENTOS_KUBERNETES_AGENT_POLICY") or "agentos-agents",
        )


def _own_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "agentos-system"
    except OSError:
        return "agentos-system"


def _peer(namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": dict(labels)},
    }


def agent_network_policy(namespace: str, network: AgentNetwork) -> dict[str, Any]:
    """The NetworkPolicy of the agent Pods of `namespace` (see the module docstring)."""
    egress: list[dict[str, Any]] = [
        {
            "to": [_peer(network.system_namespace, network.gateway_labels)],
            "ports": [{"protocol": "TCP", "port": p} for p in network.gateway_ports],
        }
    ]
    if network.allow_dns:
        egress.append(
            {
                "to": [DNS_PEER],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network.policy_name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "agentos"},
        },
        "spec": {
            "podSelector": {"matchLabels": {LABEL_MANAGED: "true"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [_peer(network.system_namespace, network.controller_labels)]}],
            "egress": egress,
        },
    }


class AgentPolicies:
    """Applies the agent NetworkPolicy once per namespace (see the module docstring)."""

    def __init__(self, client: AsyncClient, network: AgentNetwork) -> None:
        self._client = client
        self._network = network
        self._applied: set[str] = set()

    async def ensure(self, namespace: str) -> None:
        """Apply the policy in `namespace` unless this process did already. Raises
        SandboxError when the apiserver refuses it (no Pod should start unfenced)."""
        if namespace in self._applied:
            return
        manifest = agent_network_policy(namespace, self._network)
        try:
            await self._client.apply(
                cast(NetworkPolicy, NetworkPolicy.from_dict(manifest)),
                field_manager=FIELD_MANAGER,
                force=True,
            )
        except ApiError as exc:
            raise SandboxError("NetworkPolicyFailed", exc.status.message or str(exc)) from exc
        self._applied.add(namespace)


class GatewayAliases:
    """The `hostAliases` that let a Pod without DNS find the hosts of its gateway and proxy
    URLs, resolved here (in the controller) and kept `ttl_s` seconds."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self._ttl_s = ttl_s
        self._resolved: dict[str, tuple[float, list[str]]] = {}

    async def for_env(self, env: Mapping[str, str]) -> list[dict[str, Any]]:
        """One alias per address of each host name (not an IP literal, not localhost) in the
        URL variables of `env`, sorted; [] when there is none. Raises SandboxError when a
        name does not resolve."""
        hosts = sorted({h for name in URL_VARIABLES if (h := _host(env.get(name, "")))})
        by_ip: dict[str, list[str]] = {}
        for host in hosts:
            for ip in await self._addresses(host):
                by_ip.setdefault(ip, []).append(host)
        return [{"ip": ip, "hostnames": names} for ip, names in sorted(by_ip.items())]

    async def _addresses(self, host: str) -> list[str]:
        cached = self._resolved.get(host)
        if cached is not None and time.monotonic() - cached[0] < self._ttl_s:
            return cached[1]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise SandboxError("GatewayUnresolvable", f"{host}: {exc}") from exc
        addresses = sorted({str(info[4][0]) for info in infos})
        self._resolved[host] = (time.monotonic(), addresses)
        return addresses


def _host(url: str) -> str | None:
    """The host name of `url` if it needs resolving; None for an IP literal or localhost."""
    if not url:
        return None
    host = urlsplit(url if "//" in url else f"//{url}").hostname
    if not host or host == "localhost":
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None

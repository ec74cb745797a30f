"""The Kubernetes runtime: a Pod per sandbox, bound by the Agent OS scheduler (ADR 0011).

A sandbox is a Pod named by the sandbox id in the agent's namespace (namespace = tenant):
- `runtimeClassName` is the Agent's runtime class (`runc`, `gvisor`: RuntimeClass objects
  whose handlers are the node runtime's `runc` and `runsc`); class `process` runs in the
  node's default runtime (no RuntimeClass);
- `schedulerName: agentos`, so no other scheduler places it: the control plane's scheduler
  chose the node (from the capacities below) and `start` binds the Pod there through the
  `pods/binding` subresource, as kube-scheduler does;
- requests and limits from the spec; an ownerReference to the Agent custom resource when the
  agent came from one (annotation `agentos.io/kubernetes-uid`), so Kubernetes' garbage
  collector removes the Pod with it;
- hardened to the Pod Security Standards' `restricted` profile: non-root (UID 65532), no
  privilege escalation, every capability dropped, read-only root filesystem, seccomp
  RuntimeDefault, no ServiceAccount token, no service links;
- `restartPolicy: Never`: restarts are the control plane's (restartPolicy, maxRestarts and
  backoff of the Agent), each a new Pod;
- fenced by a NetworkPolicy applied in its namespace before its first Pod (egress only to
  the gateway and the egress proxy, ingress only from the controller), and given the
  gateway's address as `hostAliases` since it has no DNS (`network.py`).
The Pod is built, and read back as a sandbox state, in `pods.py`.

Pod phase and the Ready condition drive the lifecycle: Pending and unbound → CREATED, bound
or Running → RUNNING (Ready when the Pod's Ready condition is True, i.e. the kubelet's
readiness probe, built from `spec.readiness`, passes), Succeeded/Failed → EXITED.

One informer (`informer.py`: list, then watch, relisting after an error) keeps every Pod in
a cache: this installation's (labels `agentos.io/managed` and `agentos.io/instance`) answer
`status`/`probe` without a request and are the only ones the leak sweep may remove; every
other Pod counts against its node's free capacity. Nodes are cached the same way; `nodes()`
gives the scheduler each Ready, schedulable node's allocatable cpu, memory and pods minus
what foreign Pods request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import msgspec
import structlog
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core.exceptions import ConfigError
from lightkube.resources.core_v1 import Pod, PodBinding

from controlplane.domain.quantity import parse_quantity
from controlplane.domain.scheduling.admission import Node
from controlplane.runtimes.base import (
    LABEL_AGENT_ID,
    LABEL_MANAGED,
    ProbeSpec,
    SandboxError,
    SandboxSpec,
    SandboxStatus,
)
from controlplane.runtimes.kubernetes.informer import Informer, RawNode, RawPod
from controlplane.runtimes.kubernetes.network import AgentNetwork, AgentPolicies, GatewayAliases
from controlplane.runtimes.kubernetes.pods import (
    ANNOTATION_NODE,
    DEFAULT_INSTANCE,
    LABEL_INSTANCE,
    SCHEDULER_NAME,
    TERMINAL_PHASES,
    pod_manifest,
    pod_ready,
    pod_status,
    requests_of,
)

log = structlog.get_logger("agentos.runtime.kubernetes")


def node_capacity(node: dict[str, Any]) -> Node | None:
    """A Ready, schedulable node's allocatable cpu, memory and pods; None otherwise (not
    Ready, cordoned, or tainted NoSchedule/NoExecute: Agent Pods carry no tolerations)."""
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    if spec.get("unschedulable"):
        return None
    if any(t.get("effect") in ("NoSchedule", "NoExecute") for t in spec.get("taints") or []):
        return None
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        return None
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    try:
        return Node(
            node["metadata"]["name"],
            int(parse_quantity(allocatable.get("cpu", "0")) * 1000),
            int(parse_quantity(allocatable.get("memory", "0"))),
            int(parse_quantity(allocatable.get("pods", "110"))),
        )
    except ValueError:
        return None


class KubernetesRuntime:
    """Sandboxes as Pods (see the module docstring). Idempotent on `sandbox_id`."""

    name = "kubernetes"

    def __init__(
        self,
        client: AsyncClient,
        *,
        scheduler_name: str = SCHEDULER_NAME,
        instance: str = DEFAULT_INSTANCE,
        network: AgentNetwork | None = None,
    ) -> None:
        self._client = client
        self._scheduler_name = scheduler_name
        self._instance = instance
        # None: no NetworkPolicy and no host aliases (network.py).
        self._policies = AgentPolicies(client, network) if network is not None else None
        self._aliases = GatewayAliases() if network is not None and not network.allow_dns else None
        self._pods = Informer(client, RawPod, self._pod_changed)
        self._nodes = Informer(client, RawNode, self._node_changed, namespaced=False)
        self._by_sandbox: dict[str, tuple[str, str]] = {}
        self._sandbox_listeners: list[Callable[[str], None]] = []
        self._capacity_listeners: list[Callable[[], None]] = []
        self._capacities: dict[str, Node | None] = {}  # node name → what it offered last

    @classmethod
    def from_env(
        cls, scheduler_name: str = SCHEDULER_NAME, instance: str = DEFAULT_INSTANCE
    ) -> KubernetesRuntime:
        """Credentials from $KUBECONFIG (or ~/.kube/config) or, in a Pod, its ServiceAccount;
        agent Pods' network from AGENTOS_KUBERNETES_* (network.py, `AgentNetwork.from_env`).
        Raises SandboxError when there are no credentials or a network setting is malformed."""
        try:
            config = KubeConfig.from_env()
        except ConfigError as exc:
            raise SandboxError("RuntimeUnavailable", f"no Kubernetes credentials: {exc}") from exc
        try:
            network = AgentNetwork.from_env()
        except ValueError as exc:
            raise SandboxError("RuntimeUnavailable", f"agent network settings: {exc}") from exc
        client = AsyncClient(config, field_manager="agentos-controller")
        return cls(client, scheduler_name=scheduler_name, instance=instance, network=network)

    def subscribe(self, on_sandbox: Callable[[str], None], on_capacity: Callable[[], None]) -> None:
        """Call `on_sandbox(agent_id)` when a managed Pod changes and `on_capacity()` when a
        node or a foreign Pod does (level-triggered hints for the controller)."""
        self._sandbox_listeners.append(on_sandbox)
        self._capacity_listeners.append(on_capacity)

    def _pod_changed(self, pod: dict[str, Any], deleted: bool) -> None:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        if self._mine(labels):
            if deleted:
                self._by_sandbox.pop(meta["name"], None)
            else:
                self._by_sandbox[meta["name"]] = (meta["namespace"], meta["name"])
            agent_id = labels.get(LABEL_AGENT_ID)
            if agent_id:
                for listener in self._sandbox_listeners:
                    listener(agent_id)
        elif pod.get("spec", {}).get("nodeName"):
            for capacity_listener in self._capacity_listeners:
                capacity_listener()

    def _mine(self, labels: dict[str, str]) -> bool:
        """A sandbox of this installation (another one's Pods are foreign: capacity used)."""
        return labels.get(LABEL_MANAGED) == "true" and labels.get(LABEL_INSTANCE) == self._instance

    def _node_changed(self, node: dict[str, Any], deleted: bool) -> None:
        # Kubelets (and KWOK) rewrite node status every few seconds; only a change in what
        # the scheduler can place there is worth a scheduling pass.
        name = node["metadata"]["name"]
        capacity = None if deleted else node_capacity(node)
        if self._capacities.get(name) == capacity and name in self._capacities:
            return
        self._capacities[name] = capacity
        for listener in self._capacity_listeners:
            listener()

    async def _started(self) -> None:
        self._pods.start()
        self._nodes.start()
        await self._pods.synced.wait()
        await self._nodes.synced.wait()

    def _pod(self, sandbox_id: str) -> dict[str, Any] | None:
        key = self._by_sandbox.get(sandbox_id)
        return self._pods.objects.get(key) if key else None

    async def nodes(self) -> list[Node]:
        """Schedulable nodes with what foreign (non-Agent OS) Pods already request taken off;
        Agent OS's own Pods are the control plane's reservations, counted by the scheduler."""
        await self._started()
        nodes = {n.name: n for obj in self._nodes.objects.values() if (n := node_capacity(obj))}
        for pod in self._pods.objects.values():
            meta = pod["metadata"]
            node = nodes.get(pod.get("spec", {}).get("nodeName", ""))
            if node is None or self._mine(meta.get("labels") or {}):
                continue
            if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
                continue
            cpu, memory = requests_of(pod)
            node.reserve(cpu, memory)
        return list(nodes.values())

    async def create(self, spec: SandboxSpec) -> SandboxStatus:
        await self._started()
        existing = self._pod(spec.sandbox_id)
        if existing is not None:
            return pod_status(spec.sandbox_id, existing)
        # The namespace's NetworkPolicy exists before its first Pod does (network.py).
        if self._policies is not None:
            await self._policies.ensure(spec.tenant)
        aliases = await self._aliases.for_env(spec.env) if self._aliases is not None else None
        manifest = pod_manifest(spec, self._scheduler_name, self._instance, aliases)
        try:
            created = await self._client.create(cast(Pod, Pod.from_dict(manifest)))
        except ApiError as exc:
            if exc.status.code != 409:
                raise SandboxError("PodCreateFailed", exc.status.message or str(exc)) from exc
            created = await self._client.get(Pod, spec.sandbox_id, namespace=spec.tenant)
        pod = created.to_dict()
        self._by_sandbox[spec.sandbox_id] = (spec.tenant, spec.sandbox_id)
        self._pods.put(pod)
        return pod_status(spec.sandbox_id, pod)

    async def start(self, sandbox_id: str) -> SandboxStatus:
        """Bind the Pod to the node the scheduler chose (annotation `agentos.io/node`); a
        bound Pod is left alone."""
        await self._started()
        pod = self._pod(sandbox_id)
        if pod is None:
            raise SandboxError("SandboxMissing", f"no Pod {sandbox_id}")
        if pod.get("spec", {}).get("nodeName"):
            return pod_status(sandbox_id, pod)
        meta = pod["metadata"]
        node = (meta.get("annotations") or {}).get(ANNOTATION_NODE)
        if not node:
            raise SandboxError("Unschedulable", f"Pod {sandbox_id} has no node chosen")
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": sandbox_id, "namespace": meta["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            target = cast(PodBinding, PodBinding.from_dict(binding))
            await self._client.create(target, name=sandbox_id, namespace=meta["namespace"])
        except msgspec.ValidationError:
            # The apiserver answers a binding with a Status (201 Success), which lightkube
            # tries to read as a Binding; the request itself succeeded.
            pass
        except ApiError as exc:
            # 409: bound already (by an earlier attempt whose answer was lost).
            if exc.status.code != 409:
                raise SandboxError("BindFailed", exc.status.message or str(exc)) from exc
        bound = {**pod, "spec": {**pod["spec"], "nodeName": node}}
        return pod_status(sandbox_id, bound)

    async def status(self, sandbox_id: str) -> SandboxStatus:
        await self._started()
        return pod_status(sandbox_id, self._pod(sandbox_id))

    async def probe(self, sandbox_id: str, probe: ProbeSpec) -> bool:
        """The Pod's Ready condition: the kubelet ran the readiness probe in the sandbox."""
        await self._started()
        return pod_ready(self._pod(sandbox_id))

    async def stop(self, sandbox_id: str, timeout_s: float = 10.0) -> None:
        await self._delete(sandbox_id, max(0, round(timeout_s)))

    async def remove(self, sandbox_id: str) -> None:
        """Delete the Pod (graceful: its containers get SIGTERM, then SIGKILL after the
        Pod's grace period). Returns once the apiserver accepted the deletion."""
        await self._delete(sandbox_id, None)

    async def _delete(self, sandbox_id: str, grace_s: int | None) -> None:
        await self._started()
        pod = self._pod(sandbox_id)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        meta = pod["metadata"]
        try:
            await self._client.delete(
                Pod, meta["name"], namespace=meta["namespace"], grace_period=grace_s
            )
        except ApiError as exc:
            if exc.status.code != 404:
                raise SandboxError("PodDeleteFailed", exc.status.message or str(exc)) from exc

    async def logs(self, sandbox_id: str, tail_lines: int = 100) -> str:
        """The agent container's log through the apiserver ("" when the node serves none)."""
        await self._started()
        key = self._by_sandbox.get(sandbox_id)
        if key is None:
            return ""
        lines: list[str] = []
        try:
            async for line in self._client.log(
                key[1], namespace=key[0], container="agent", tail_lines=tail_lines
            ):
                lines.append(line)
        except (ApiError, OSError) as exc:
            log.debug("no logs", sandbox_id=sandbox_id, error=str(exc))
        return "".join(lines)

    async def list_sandboxes(self) -> dict[str, str]:
        await self._started()
        found: dict[str, str] = {}
        for sandbox_id, key in self._by_sandbox.items():
            pod = self._pods.objects.get(key)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                continue
            found[sandbox_id] = pod["metadata"]["labels"].get(LABEL_AGENT_ID, "")
        return found

    async def close(self) -> None:
        await self._pods.stop()
        await self._nodes.stop()
        await self._client.close()

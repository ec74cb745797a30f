"""The Pod of a sandbox, and how a Pod reads as a sandbox (see runtime.py for the whole).

The Pod is named by the sandbox id, in the agent's namespace (namespace = tenant); its
`runtimeClassName` is the Agent's runtime class (`runc`, `gvisor`; class `process` runs in
the node's default runtime); `schedulerName: agentos`, so only the control plane's scheduler
places it; requests and limits from the spec; an ownerReference to the Agent custom resource
it mirrors, if any; hardened to the Pod Security Standards' `restricted` profile (non-root
UID 65532, no privilege escalation, every capability dropped, read-only root filesystem,
seccomp RuntimeDefault, no ServiceAccount token, no service links); `restartPolicy: Never`.
The agent's config reaches it through the downward API, as a file under /etc/agentos.
"""

from __future__ import annotations

import json
from typing import Any

from controlplane.domain.quantity import parse_quantity
from controlplane.runtimes.base import (
    ProbeSpec,
    SandboxError,
    SandboxSpec,
    SandboxState,
    SandboxStatus,
)

SCHEDULER_NAME = "agentos"
LABEL_INSTANCE = "agentos.io/instance"
DEFAULT_INSTANCE = "agentos"
ANNOTATION_NODE = "agentos.io/node"
ANNOTATION_CONFIG = "agentos.io/config"
ANNOTATION_KUBERNETES_UID = "agentos.io/kubernetes-uid"
AGENT_UID = 65532
CONFIG_DIR = "/etc/agentos"
RUN_DIR = "/var/run/agentos"
CONFIG_FIELD = f"metadata.annotations['{ANNOTATION_CONFIG}']"
RUNTIME_CLASSES = {"runc": "runc", "gvisor": "gvisor"}  # Agent class → RuntimeClass name
TERMINAL_PHASES = ("Succeeded", "Failed")


def readiness_probe(probe: ProbeSpec) -> dict[str, Any]:
    """The kubelet readiness probe for an Agent's `spec.readiness`. A heartbeat becomes an
    exec probe that checks the heartbeat file's age (the image needs `sh` and `find`)."""
    timing = {
        "periodSeconds": max(1, round(probe.period_s)),
        "timeoutSeconds": max(1, round(probe.timeout_s)),
        "failureThreshold": probe.failure_threshold,
    }
    if probe.http_port is not None:
        return {"httpGet": {"path": probe.http_path, "port": probe.http_port}, **timing}
    if probe.exec_command:
        return {"exec": {"command": list(probe.exec_command)}, **timing}
    fresh_s = max(1, round(probe.period_s * probe.failure_threshold))
    check = f'test -n "$(find {RUN_DIR}/heartbeat -newermt "-{fresh_s} seconds" 2>/dev/null)"'
    return {"exec": {"command": ["sh", "-c", check]}, **timing}


def pod_manifest(
    spec: SandboxSpec,
    scheduler_name: str = SCHEDULER_NAME,
    instance: str = DEFAULT_INSTANCE,
    host_aliases: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The Pod for `spec` (see the module docstring), with `host_aliases` (entries of its
    /etc/hosts: network.py) if any. Raises SandboxError for an image a node cannot pull
    (`oci-archive:` paths are local to the control plane)."""
    if spec.image.startswith("oci-archive:"):
        raise SandboxError(
            "InvalidImage", "an oci-archive: image exists only on the control plane's host"
        )
    pod_spec = _pod_spec(spec, scheduler_name)
    if host_aliases:
        pod_spec["hostAliases"] = host_aliases
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(spec, instance),
        "spec": pod_spec,
    }


def _metadata(spec: SandboxSpec, instance: str) -> dict[str, Any]:
    """Name, namespace, labels, our annotations and the owning Agent resource (if any)."""
    metadata: dict[str, Any] = {
        "name": spec.sandbox_id,
        "namespace": spec.tenant,
        "labels": {
            **spec.labels(),
            LABEL_INSTANCE: instance,
            "app.kubernetes.io/name": spec.name,
            "app.kubernetes.io/managed-by": "agentos",
        },
        "annotations": {
            ANNOTATION_NODE: spec.node,
            ANNOTATION_CONFIG: json.dumps(spec.config, sort_keys=True),
        },
    }
    owner_uid = spec.annotations.get(ANNOTATION_KUBERNETES_UID)
    if owner_uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "agentos.io/v1alpha1",
                "kind": "Agent",
                "name": spec.name,
                "uid": owner_uid,
                "controller": True,
            }
        ]
    return metadata


def _pod_spec(spec: SandboxSpec, scheduler_name: str) -> dict[str, Any]:
    """The restricted Pod around the one container, with its config, run and tmp volumes."""
    config_item = {"path": "config.json", "fieldRef": {"fieldPath": CONFIG_FIELD}}
    pod_spec: dict[str, Any] = {
        "schedulerName": scheduler_name,
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 10,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "fsGroup": AGENT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(spec)],
        "volumes": [
            {"name": "config", "downwardAPI": {"items": [config_item]}},
            {"name": "run", "emptyDir": {"sizeLimit": "1Mi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }
    runtime_class = RUNTIME_CLASSES.get(spec.runtime_class)
    if runtime_class:
        pod_spec["runtimeClassName"] = runtime_class
    return pod_spec


def _container(spec: SandboxSpec) -> dict[str, Any]:
    """The agent container: image, command/args, env, resources, readiness probe, mounts."""
    env = [{"name": k, "value": v} for k, v in spec.env.items()]
    env += [
        {"name": "AGENTOS_AGENT_NAME", "value": spec.name},
        {"name": "AGENTOS_TENANT", "value": spec.tenant},
        {"name": "AGENTOS_CONFIG_FILE", "value": f"{CONFIG_DIR}/config.json"},
        {"name": "AGENTOS_HEARTBEAT_FILE", "value": f"{RUN_DIR}/heartbeat"},
    ]
    container: dict[str, Any] = {
        "name": "agent",
        "image": spec.image,
        "env": env,
        "resources": _resources(spec),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "run", "mountPath": RUN_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a volume, not a temp file
        ],
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    if spec.probe is not None:
        container["readinessProbe"] = readiness_probe(spec.probe)
    return container


def _resources(spec: SandboxSpec) -> dict[str, dict[str, str]]:
    """Requests (what the scheduler reserved) and limits, in Kubernetes quantities."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if spec.request_cpu_millis:
        requests["cpu"] = f"{spec.request_cpu_millis}m"
    if spec.request_memory_bytes:
        requests["memory"] = str(spec.request_memory_bytes)
    if spec.cpu_millis:
        limits["cpu"] = f"{spec.cpu_millis}m"
    if spec.memory_bytes:
        limits["memory"] = str(spec.memory_bytes)
    return {"requests": requests, "limits": limits}


def pod_status(sandbox_id: str, pod: dict[str, Any] | None) -> SandboxStatus:
    """A Pod's phase as a sandbox state (see the module docstring)."""
    if pod is None:
        return SandboxStatus(sandbox_id, SandboxState.MISSING)
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    if pod["metadata"].get("deletionTimestamp"):
        return SandboxStatus(sandbox_id, SandboxState.EXITED, message="the Pod is being deleted")
    if phase in TERMINAL_PHASES:
        code = None
        for cs in status.get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated")
            if terminated:
                code = terminated.get("exitCode")
        message = status.get("message") or status.get("reason") or f"Pod {phase}"
        return SandboxStatus(sandbox_id, SandboxState.EXITED, exit_code=code, message=message)
    if not pod.get("spec", {}).get("nodeName"):
        return SandboxStatus(sandbox_id, SandboxState.CREATED, message="Pod not bound")
    return SandboxStatus(sandbox_id, SandboxState.RUNNING, message=f"Pod {phase}")


def pod_ready(pod: dict[str, Any] | None) -> bool:
    """The Pod's Ready condition is True (Kubernetes: all containers pass readiness)."""
    if pod is None or pod["metadata"].get("deletionTimestamp"):
        return False
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


def requests_of(pod: dict[str, Any]) -> tuple[int, int]:
    """What a Pod requests, in millicores and bytes (its containers' requests summed)."""
    cpu = memory = 0
    for c in pod.get("spec", {}).get("containers", []):
        requests = (c.get("resources") or {}).get("requests") or {}
        if "cpu" in requests:
            cpu += int(parse_quantity(requests["cpu"]) * 1000)
        if "memory" in requests:
            memory += int(parse_quantity(requests["memory"]))
    return cpu, memory

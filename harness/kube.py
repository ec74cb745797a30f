"""Agent OS on the test kube-apiserver (from `make services`): install the CRD, RBAC and
RuntimeClasses as shipped, mint ServiceAccount kubeconfigs, make tenant namespaces and KWOK
fake nodes, and run `agentos` processes (controller, operator) under those accounts.

Shared by the Kubernetes integration tests and `bench/operator`.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from harness.ports import free_port
from harness.services import service_setting
from harness.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "Kubernetes (kube-apiserver, etcd, KWOK)"
SYSTEM_NAMESPACE = "agentos-system"
CRD = ROOT / "deploy" / "crds" / "agents.agentos.io.yaml"
RBAC = sorted((ROOT / "deploy" / "rbac").glob("*.yaml"))
RUNTIME_CLASSES = ROOT / "deploy" / "runtimeclasses.yaml"
FLOW_SCHEMA = ROOT / "deploy" / "flowschema.yaml"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


def admin_kubeconfig() -> str:
    return service_setting("KUBECONFIG", SERVICE)


def kubectl(
    *args: str,
    kubeconfig: str | None = None,
    stdin: str | None = None,
    check: bool = True,
    timeout_s: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl (as the admin unless `kubeconfig` says otherwise)."""
    done = subprocess.run(
        [
            service_setting("AGENTOS_KUBECTL", SERVICE),
            "--kubeconfig",
            kubeconfig or admin_kubeconfig(),
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def apply_objects(objects: Iterable[Mapping[str, Any]]) -> None:
    """Server-side apply of `objects` as the admin."""
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(list(objects)),
    )


def install() -> None:
    """The CRD (waiting until Established), the system namespace, RBAC, RuntimeClasses and
    the FlowSchema, exactly as shipped in deploy/."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl("create", "namespace", SYSTEM_NAMESPACE, check=False)
    for manifest in [*RBAC, RUNTIME_CLASSES, FLOW_SCHEMA]:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest))

    def established() -> bool:
        crd = kubectl_json("get", "crd", "agents.agentos.io")
        conditions = crd["status"].get("conditions", [])
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_until(established, 30, "the Agent CRD to be Established")


def service_account_kubeconfig(account: str, path: Path) -> Path:
    """A kubeconfig at `path` that authenticates as ServiceAccount `account` of the system
    namespace, with a token from the TokenRequest API (what a Pod would mount)."""
    token = kubectl(
        "create", "token", account, "-n", SYSTEM_NAMESPACE, "--duration", "6h"
    ).stdout.strip()
    admin = yaml.safe_load(Path(admin_kubeconfig()).read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "agentos-test", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "agentos-test", "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def tenant_namespace(prefix: str = "tenant") -> str:
    """A new namespace (a tenant) that enforces the `restricted` Pod Security Standard, with
    the `default` ServiceAccount a controller manager would have made."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    apply_objects(
        [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": {
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest",
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": name},
            },
        ]
    )
    return name


def namespaced_kinds() -> str:
    """Every namespaced resource type the apiserver can list and delete, comma-joined (for
    `kubectl get/delete KINDS`): what kube-controller-manager's namespace controller walks."""
    listed = kubectl("api-resources", "--namespaced=true", "--verbs=list,delete", "-o", "name")
    return ",".join(listed.stdout.split())


def remove_finalizers(namespace: str, kinds: str = "agents.agentos.io") -> None:
    """Drop the finalizers of every object of `kinds` in `namespace` (one merge patch each,
    in one kubectl call), e.g. agentos.io/finalizer on Agents once no operator is left to
    remove it; their deletion then goes through."""
    listed = kubectl("get", kinds, "-n", namespace, "-o", "json", check=False)
    if listed.returncode != 0:  # the kind (the CRD) is not installed, or the namespace gone
        return
    held = [i for i in json.loads(listed.stdout)["items"] if i["metadata"].get("finalizers")]
    if held:
        kubectl(
            "patch", "-f", "-", "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": held}),
            check=False,  # one deleted meanwhile is NotFound; the caller looks again
        )  # fmt: skip


def delete_namespace(name: str, timeout_s: float = 120) -> None:
    """Delete namespace `name` and everything in it, and wait until it is gone.

    No kube-controller-manager runs on the test apiserver, so this does what its namespace
    controller would: mark the namespace Terminating (no object can be created in it from
    then on), delete every object in it (finalizers removed first: stop the operator
    before, or it races to keep them), then remove the namespace's own `kubernetes`
    finalizer through the `finalize` subresource. A namespace that does not exist is fine.
    """
    if kubectl("get", "namespace", name, check=False).returncode != 0:
        return
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
    kinds = namespaced_kinds()

    def emptied() -> bool:
        remove_finalizers(name, kinds)
        kubectl(
            "delete", kinds, "--all", "-n", name, "--ignore-not-found", "--wait=false",
            "--grace-period=0", "--force", check=False, timeout_s=300,
        )  # fmt: skip
        left = kubectl("get", kinds, "-n", name, "-o", "name", check=False)
        return left.returncode == 0 and not left.stdout.strip()

    wait_until(emptied, timeout_s, f"namespace {name} emptied")
    namespace = kubectl_json("get", "namespace", name)
    namespace["spec"]["finalizers"] = []
    kubectl(
        "replace", "--raw", f"/api/v1/namespaces/{name}/finalize", "-f", "-",
        stdin=json.dumps(namespace),
    )  # fmt: skip

    def gone() -> bool:
        return kubectl("get", "namespace", name, check=False).returncode != 0

    wait_until(gone, 30, f"namespace {name} deleted")


@dataclass(frozen=True)
class NodeShape:
    cpu: str
    memory: str
    pods: int


def fake_nodes(prefix: str, shapes: list[NodeShape]) -> list[str]:
    """Create KWOK-managed nodes of these capacities; returns their names once all are
    Ready (KWOK's node-initialize stage)."""
    names = [f"{prefix}-{i:03d}" for i in range(len(shapes))]
    apply_objects(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_ANNOTATION: "fake"},
                "labels": {"type": "kwok", "agentos.io/test-nodes": prefix},
            },
            "status": {
                "allocatable": {"cpu": s.cpu, "memory": s.memory, "pods": str(s.pods)},
                "capacity": {"cpu": s.cpu, "memory": s.memory, "pods": str(s.pods)},
            },
        }
        for name, s in zip(names, shapes, strict=True)
    )

    def all_ready() -> bool:
        items = kubectl_json("get", "nodes", "-l", f"agentos.io/test-nodes={prefix}")["items"]
        ready = [
            n
            for n in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        return len(ready) == len(names)

    wait_until(all_ready, 60, f"{len(names)} KWOK nodes to be Ready")
    # The node lifecycle controller (kube-controller-manager, not run here) lifts the
    # not-ready taint the apiserver puts on a new node once the node is Ready.
    for name in names:
        kubectl("taint", "nodes", name, "node.kubernetes.io/not-ready:NoSchedule-", check=False)
    return names


def delete_fake_nodes(prefix: str) -> None:
    kubectl("delete", "nodes", "-l", f"agentos.io/test-nodes={prefix}", "--wait=false")


class AgentOS:
    """An `agentos` subprocess (e.g. `serve` or `operator`) with its own environment and log
    file; stopped (SIGTERM, then SIGKILL) by `stop`, killed outright by `kill`."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = args
        self.env = dict(env)
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentOS:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli.main", *self.args],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def stop(self, timeout_s: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def base_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")}
    env.update(
        AGENTOS_DATABASE_URL=database_url,
        AGENTOS_LOG_FORMAT="json",
        AGENTOS_LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    return env


def controller_process(
    database_url: str, kubeconfig: Path, log_path: Path, instance: str
) -> AgentOS:
    """The control plane's controller on the Kubernetes runtime, as ServiceAccount
    agentos-controller, its Pods labelled with `instance` (see remove_instance_pods)."""
    env = base_env(database_url)
    env.update(
        AGENTOS_INSTANCE=instance,
        KUBECONFIG=str(kubeconfig),
        AGENTOS_RUNTIME="kubernetes",
        AGENTOS_COMPONENTS="controller",
        AGENTOS_HOST="127.0.0.1",
        AGENTOS_PORT=str(free_port()),
        AGENTOS_CONTROLLER_WORKERS="16",
    )
    return AgentOS(["serve"], env, log_path)


def operator_process(
    database_url: str,
    kubeconfig: Path,
    log_path: Path,
    namespaces: Iterable[str],
    *,
    lease_duration_s: int = 15,
) -> AgentOS:
    """`agentos operator` as ServiceAccount agentos-operator, watching only `namespaces`
    (other tests' Agents live in the same apiserver). The Lease times are client-go's
    defaults unless `lease_duration_s` makes them shorter (a test of a takeover); too short
    a renew deadline loses the Lease on an apiserver that throttles under load."""
    env = base_env(database_url)
    env.update(
        AGENTOS_OPERATOR_NAMESPACES=",".join(namespaces),
        KUBECONFIG=str(kubeconfig),
        AGENTOS_OPERATOR_NAMESPACE=SYSTEM_NAMESPACE,
        AGENTOS_OPERATOR_LEASE_DURATION_S=str(lease_duration_s),
        AGENTOS_OPERATOR_RENEW_DEADLINE_S=str(lease_duration_s * 0.6),
        AGENTOS_OPERATOR_RETRY_PERIOD_S=str(lease_duration_s * 0.15),
        AGENTOS_OPERATOR_HEALTH_HOST="127.0.0.1",
        AGENTOS_OPERATOR_HEALTH_PORT=str(free_port()),
    )
    return AgentOS(["operator"], env, log_path)


def new_instance() -> str:
    """A fresh installation name: tests and benchmarks share one apiserver."""
    return f"test-{uuid.uuid4().hex[:10]}"


def remove_instance_pods(instance: str) -> None:
    """Delete every Pod of `instance` at once (KWOK would otherwise keep running them)."""
    kubectl(
        "delete", "pods", "-A", "-l", f"agentos.io/instance={instance}",
        "--grace-period=0", "--force", "--wait=false", check=False,
    )  # fmt: skip


def wait_started(process: AgentOS, line: str = "controller started", timeout_s: float = 60) -> None:
    """Wait until `process` logged `line` (the controller has swept and listed)."""
    wait_until(lambda: line in process.log(), timeout_s, f"{process.args[0]}: {line!r}")


def lease_holder() -> str | None:
    got = kubectl(
        "get", "lease", "agentos-operator", "-n", SYSTEM_NAMESPACE, "-o", "json", check=False
    )
    if got.returncode != 0:
        return None
    holder: str | None = json.loads(got.stdout).get("spec", {}).get("holderIdentity")
    return holder


def release_lease() -> None:
    """Forget any earlier test's Lease (a killed operator's would otherwise hold for its
    whole duration)."""
    kubectl("delete", "lease", "agentos-operator", "-n", SYSTEM_NAMESPACE, "--ignore-not-found")


def decode_token_subject(kubeconfig: Path) -> str:
    """The `sub` of the kubeconfig's ServiceAccount token (system:serviceaccount:NS:NAME)."""
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])

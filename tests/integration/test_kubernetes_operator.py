"""Agent OS on a real kube-apiserver with KWOK nodes: `kubectl apply` of Agents, the operator
(under its own ServiceAccount and the shipped RBAC) mirroring them into the control plane,
the controller (under its own) running them as Pods bound by the Agent OS scheduler.

KWOK plays the kubelet: Pods bound to its fake nodes become Running and Ready. No
kube-controller-manager runs, so the fixtures do its part (a namespace's `default`
ServiceAccount, lifting the not-ready taint of a new node, deleting a namespace and what is
in it). Each test deletes the namespaces, nodes and Lease it made.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.data.engine import create_engine
from controlplane.data.repositories.agents import AgentRepository
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.events.registry import load_builtin_schemas
from controlplane.domain.quantity import parse_quantity
from controlplane.domain.records import AgentRecord
from controlplane.service import tenants as tenant_service
from controlplane.service.agents import KUBERNETES_UID
from harness import kube as kc
from harness.waiting import eventually, wait_until

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "agents"
OPERATOR_SA = "agentos-operator"
CONTROLLER_SA = "agentos-controller"


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Agent OS installed as shipped; a kubeconfig per ServiceAccount."""
    kc.install()
    where = tmp_path_factory.mktemp("kube")
    return {
        sa: kc.service_account_kubeconfig(sa, where / f"{sa}.kubeconfig")
        for sa in (OPERATOR_SA, CONTROLLER_SA)
    }


@pytest.fixture
def tenant(stack: Stack) -> str:
    return stack.namespace("t")


@pytest.fixture
def nodes() -> Iterator[list[str]]:
    prefix = f"n{random.randrange(16**6):06x}"
    names = kc.fake_nodes(prefix, [kc.NodeShape("4", "8Gi", 50)] * 3)
    yield names
    kc.delete_fake_nodes(prefix)


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_url)
    yield engine
    await engine.dispose()


class Stack:
    """The controller and operator processes of one test and its tenant namespaces; at the
    end the processes are stopped, then the namespaces deleted with everything in them
    (the Agents' finalizers, which no operator will remove any more, first)."""

    def __init__(self, pg_url: str, accounts: dict[str, Path], logs: Path) -> None:
        self.pg_url = pg_url
        self.accounts = accounts
        self.logs = logs
        self.processes: list[kc.AgentOS] = []
        self.namespaces: list[str] = []
        self.instance = kc.new_instance()

    def namespace(self, prefix: str) -> str:
        """A new tenant namespace (kube_cluster.tenant_namespace), deleted by `stop`."""
        name = kc.tenant_namespace(prefix)
        self.namespaces.append(name)
        return name

    def controller(self) -> kc.AgentOS:
        proc = kc.controller_process(
            self.pg_url, self.accounts[CONTROLLER_SA], self.logs / "controller.log", self.instance
        )
        self.processes.append(proc.start())
        kc.wait_started(proc)
        return proc

    def operator(
        self, tenants: list[str], name: str = "operator", lease_duration_s: int = 15
    ) -> kc.AgentOS:
        proc = kc.operator_process(
            self.pg_url,
            self.accounts[OPERATOR_SA],
            self.logs / f"{name}.log",
            tenants,
            lease_duration_s=lease_duration_s,
        )
        self.processes.append(proc.start())
        return proc

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()
        kc.remove_instance_pods(self.instance)
        kc.release_lease()
        for name in self.namespaces:
            kc.delete_namespace(name)


@pytest.fixture
def stack(pg_url: str, accounts: dict[str, Path], tmp_path: Path) -> Iterator[Stack]:
    kc.release_lease()
    running = Stack(pg_url, accounts, tmp_path)
    yield running
    running.stop()


def agents_of(tenant: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kc.kubectl_json("get", "agents", "-n", tenant)["items"]
    return items


def pods_of(tenant: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kc.kubectl_json("get", "pods", "-n", tenant)["items"]
    return items


def all_ready(tenant: str, count: int) -> list[dict[str, Any]] | None:
    items = agents_of(tenant)
    ready = [a for a in items if a.get("status", {}).get("phase") == "Ready"]
    return items if len(items) == count and len(ready) == count else None


async def records_of(db: AsyncEngine, tenant: str) -> list[AgentRecord]:
    async with db.connect() as conn:
        return list(await AgentRepository(conn).list(tenant))


def agent_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"image": "registry.example/agent:1", "runtime": {"class": "runc"}, **spec},
    }


async def test_examples_become_ready_on_kwok_nodes_and_delete_removes_pods_and_records(
    stack: Stack, tenant: str, nodes: list[str], db: AsyncEngine
) -> None:
    stack.controller()
    stack.operator([tenant])
    kc.kubectl("apply", "-n", tenant, "-f", str(EXAMPLES))
    count = len(list(EXAMPLES.glob("*.yaml")))

    agents = wait_until(lambda: all_ready(tenant, count), 90, f"{count} example Agents Ready")
    table = kc.kubectl("get", "agents", "-n", tenant).stdout
    assert table.split("\n")[0].split() == ["NAME", "PHASE", "RUNTIME", "NODE", "READY", "AGE"]
    pods = {p["metadata"]["labels"]["agentos.io/agent-id"]: p for p in pods_of(tenant)}
    assert len(pods) == count
    for agent in agents:
        status, spec = agent["status"], agent["spec"]
        assert status["node"] in kc.kubectl("get", "nodes", "-o", "name").stdout
        assert status["observedGeneration"] == agent["metadata"]["generation"]
        assert re.search(
            rf"^{agent['metadata']['name']}\s+Ready\s+\S+\s+{status['node']}\s+True", table, re.M
        )
        pod = pods[status["agentID"]]
        assert pod["spec"]["nodeName"] == status["node"]
        assert pod["spec"]["schedulerName"] == "agentos"
        assert pod["status"]["phase"] == "Running"
        runtime_class = spec["runtime"]["class"]
        assert pod["spec"].get("runtimeClassName") == (
            None if runtime_class == "process" else runtime_class
        )
        (owner,) = pod["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "Agent",
            agent["metadata"]["name"],
            agent["metadata"]["uid"],
        )
        # Hardened (the namespace also enforces the restricted Pod Security Standard).
        (container,) = pod["spec"]["containers"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        limits = (spec.get("resources") or {}).get("limits") or {}
        if "cpu" in limits:
            assert parse_quantity(container["resources"]["limits"]["cpu"]) == parse_quantity(
                limits["cpu"]
            )
    events = kc.kubectl_json("get", "events", "-n", tenant)["items"]
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in events}
    assert ("runc-agent", "Ready") in reasons and ("runc-agent", "Scheduled") in reasons

    kc.kubectl("delete", "-n", tenant, "-f", str(EXAMPLES), "--wait=true", timeout_s=120)
    assert agents_of(tenant) == []
    wait_until(lambda: pods_of(tenant) == [], 60, "every agent Pod gone")
    assert await records_of(db, tenant) == []


async def test_operator_acts_under_its_service_account_with_only_the_shipped_rules(
    accounts: dict[str, Path],
) -> None:
    subject = kc.decode_token_subject(accounts[OPERATOR_SA])
    assert subject == f"system:serviceaccount:{kc.SYSTEM_NAMESPACE}:{OPERATOR_SA}"
    shipped = next(
        d
        for d in yaml.safe_load_all((ROOT / "deploy/rbac/operator.yaml").read_text())
        if d["kind"] == "ClusterRole"
    )
    live = kc.kubectl_json("get", "clusterrole", OPERATOR_SA)
    assert live["rules"] == shipped["rules"]

    def can(verb: str, resource: str, account: str = OPERATOR_SA, ns: str = "default") -> bool:
        who = f"system:serviceaccount:{kc.SYSTEM_NAMESPACE}:{account}"
        got = kc.kubectl("auth", "can-i", verb, resource, "-n", ns, "--as", who, check=False)
        return got.stdout.strip() == "yes"

    assert can("watch", "agents.agentos.io") and can("patch", "agents.agentos.io/status")
    assert can("update", "leases.coordination.k8s.io/agentos-operator", ns=kc.SYSTEM_NAMESPACE)
    for verb, resource in [("create", "pods"), ("get", "secrets"), ("list", "namespaces")]:
        assert not can(verb, resource), f"the operator may {verb} {resource}"
    assert not can("delete", "agents.agentos.io")
    assert not can("update", "leases.coordination.k8s.io/other", ns=kc.SYSTEM_NAMESPACE)
    # The controller creates and binds Pods but reads no Secrets and touches no Agents.
    assert can("create", "pods", CONTROLLER_SA) and can("create", "pods/binding", CONTROLLER_SA)
    assert not can("get", "secrets", CONTROLLER_SA)
    assert not can("patch", "agents.agentos.io", CONTROLLER_SA)


async def test_operator_killed_mid_reconcile_leaves_no_duplicate_and_no_orphan(
    stack: Stack, tenant: str, nodes: list[str], db: AsyncEngine
) -> None:
    stack.controller()
    first = stack.operator([tenant], "operator-1")
    count = 40
    manifests = [agent_manifest(f"a{i:02d}") for i in range(count)]
    kc.kubectl("create", "-n", tenant, "-f", "-", stdin=yaml.safe_dump_all(manifests))

    async def some_mirrored() -> bool:
        return len(await records_of(db, tenant)) >= 5

    await eventually(some_mirrored, 60, "the first agents in the control plane")
    first.kill()  # SIGKILL: no graceful release of the Lease, handlers cut mid-way
    stack.operator([tenant], "operator-2")

    agents = wait_until(lambda: all_ready(tenant, count), 120, f"{count} Agents Ready")
    records = await records_of(db, tenant)
    assert sorted(r.name for r in records) == sorted(m["metadata"]["name"] for m in manifests)
    uids = {a["metadata"]["name"]: a["metadata"]["uid"] for a in agents}
    assert all(r.annotations[KUBERNETES_UID] == uids[r.name] for r in records)
    pods = pods_of(tenant)
    owners = Counter(p["metadata"]["labels"]["agentos.io/agent-id"] for p in pods)
    assert set(owners) == {r.id for r in records}, "a Pod without an agent, or an agent without"
    assert max(owners.values()) == 1, "an agent with two Pods"


async def test_of_two_operators_only_the_lease_holder_acts_and_the_other_takes_over(
    stack: Stack, tenant: str, nodes: list[str], db: AsyncEngine
) -> None:
    stack.controller()
    # A short Lease, so the takeover after the kill below comes within seconds.
    one = stack.operator([tenant], "operator-a", lease_duration_s=4)
    two = stack.operator([tenant], "operator-b", lease_duration_s=4)
    holder = wait_until(kc.lease_holder, 30, "a Lease holder")
    kc.kubectl("create", "-n", tenant, "-f", "-", stdin=yaml.safe_dump(agent_manifest("first")))
    wait_until(lambda: all_ready(tenant, 1), 60, "the first Agent Ready")

    def acted(proc: kc.AgentOS) -> bool:
        return "apply' succeeded" in proc.log()

    leader, standby = (one, two) if acted(one) else (two, one)
    assert acted(leader) and not acted(standby), "both operators handled the Agent"
    assert kc.lease_holder() == holder

    leader.kill()
    wait_until(lambda: kc.lease_holder() not in (None, holder), 30, "a new Lease holder")
    kc.kubectl("create", "-n", tenant, "-f", "-", stdin=yaml.safe_dump(agent_manifest("second")))
    wait_until(lambda: all_ready(tenant, 2), 60, "the second Agent Ready")
    assert acted(standby)
    assert len(await records_of(db, tenant)) == 2


async def test_hundred_nodes_and_thousand_agents_overcommit_no_node_and_quotas_hold(
    stack: Stack, db: AsyncEngine, pg_url: str
) -> None:
    rng = random.Random(6)
    prefix = f"cap{uuid.uuid4().hex[:6]}"
    shapes = [
        kc.NodeShape(f"{rng.choice([1, 2, 4])}", f"{rng.choice([1, 2, 4])}Gi", rng.choice([5, 10]))
        for _ in range(100)
    ]
    try:
        names = kc.fake_nodes(prefix, shapes)
        capacity = {n: s for n, s in zip(names, shapes, strict=True)}
        tenants = [stack.namespace("q") for _ in range(4)]
        quotas = {tenants[0]: 50, tenants[1]: 120}  # agents; the others unlimited
        registry = load_builtin_schemas()
        for name, agents in quotas.items():
            async with UnitOfWork(db, registry, principal="test") as uow:
                await tenant_service.create_tenant(uow, name, {"agents": agents})
        stack.controller()
        stack.operator(tenants)
        for tenant in tenants:
            manifests = [
                agent_manifest(
                    f"w{i:03d}",
                    resources={
                        "requests": {
                            "cpu": f"{rng.choice([100, 200, 500])}m",
                            "memory": f"{rng.choice([64, 128, 256])}Mi",
                        }
                    },
                )
                for i in range(250)
            ]
            kc.kubectl(
                "create",
                "-n",
                tenant,
                "-f",
                "-",
                stdin=yaml.safe_dump_all(manifests),
                timeout_s=300,
            )

        async def settled() -> list[AgentRecord] | None:
            """Every agent Ready, or waiting in Created with Scheduled=False."""
            found = [r for t in tenants for r in await records_of(db, t)]
            if len(found) < 1000:
                return None
            waiting = [r for r in found if r.phase != "Ready"]
            if any(r.phase != "Created" or r.status.reason != "Unschedulable" for r in waiting):
                return None
            return found

        try:
            records = await eventually(settled, 240, "1,000 agents Ready or Unschedulable")
        except AssertionError:
            found = [r for t in tenants for r in await records_of(db, t)]
            states = Counter((r.phase, r.status.reason) for r in found)
            raise AssertionError(f"not settled: {len(found)} agents, {dict(states)}") from None
        ready = [r for r in records if r.phase == "Ready"]
        assert len(ready) > 300, "too few placed for the test to mean anything"
        assert len(ready) < 1000, "capacity was meant to run out"

        pods = [p for t in tenants for p in pods_of(t)]
        used: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for pod in pods:
            requests = pod["spec"]["containers"][0]["resources"]["requests"]
            u = used[pod["spec"]["nodeName"]]
            u[0] += int(parse_quantity(requests["cpu"]) * 1000)
            u[1] += int(parse_quantity(requests["memory"]))
            u[2] += 1
        assert used, "no Pod was bound"
        # Every node the Pods landed on, ours or another test's, as the apiserver has it.
        allocatable = {
            n["metadata"]["name"]: n["status"]["allocatable"]
            for n in kc.kubectl_json("get", "nodes")["items"]
        }
        assert set(used) <= set(allocatable), "a Pod bound to a node that does not exist"
        assert set(used) & set(capacity), "no Pod landed on this test's nodes"
        for node, (cpu, memory, count) in used.items():
            offered = allocatable[node]
            assert cpu <= parse_quantity(offered["cpu"]) * 1000, f"{node} cpu overcommitted"
            assert memory <= parse_quantity(offered["memory"]), f"{node} memory overcommitted"
            assert count <= int(offered["pods"]), f"{node} holds more Pods than it allows"
        per_tenant = Counter(r.tenant for r in ready)
        for name, limit in quotas.items():
            assert per_tenant[name] <= limit, f"{name} over its quota of {limit}"
        assert len(pods) == len(ready)
    finally:
        kc.delete_fake_nodes(prefix)


async def test_spec_change_bumps_generation_observed_generation_follows_and_pod_is_replaced(
    stack: Stack, tenant: str, nodes: list[str]
) -> None:
    stack.controller()
    stack.operator([tenant])
    kc.kubectl("create", "-n", tenant, "-f", "-", stdin=yaml.safe_dump(agent_manifest("edit")))
    wait_until(lambda: all_ready(tenant, 1), 60, "the Agent Ready")
    (before,) = pods_of(tenant)

    def observed(generation: int) -> dict[str, Any] | None:
        (agent,) = agents_of(tenant)
        status = agent.get("status", {})
        if agent["metadata"]["generation"] != generation:
            return None
        if status.get("observedGeneration") != generation or status.get("phase") != "Ready":
            return None
        return agent

    # Not the sandbox: priority. Generation 2, the same Pod.
    kc.kubectl(
        "patch", "agent", "edit", "-n", tenant, "--type=merge", "-p", '{"spec":{"priority":5}}'
    )
    wait_until(lambda: observed(2), 60, "observedGeneration 2")
    (same,) = pods_of(tenant)
    assert same["metadata"]["uid"] == before["metadata"]["uid"]

    # The sandbox: an environment variable. Generation 3, a new Pod with it.
    patch = {"spec": {"env": [{"name": "MODE", "value": "fast"}]}}
    kc.kubectl("patch", "agent", "edit", "-n", tenant, "--type=merge", "-p", json.dumps(patch))
    wait_until(lambda: observed(3), 60, "observedGeneration 3")

    def replaced() -> dict[str, Any] | None:
        live = [p for p in pods_of(tenant) if not p["metadata"].get("deletionTimestamp")]
        return (
            live[0]
            if len(live) == 1 and live[0]["metadata"]["uid"] != before["metadata"]["uid"]
            else None
        )

    after = wait_until(replaced, 60, "the Pod replaced")
    env = {e["name"]: e.get("value") for e in after["spec"]["containers"][0]["env"]}
    assert env["MODE"] == "fast"

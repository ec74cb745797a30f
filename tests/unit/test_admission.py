"""Scheduler admission: quota, capacity, priority and fairness between tenants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controlplane.domain.scheduling.admission import Node, Pending, TenantUsage, schedule

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pending(
    agent: str, tenant: str, *, priority: int = 0, cpu: int = 100, mem: int = 1, age: int = 0
) -> Pending:
    return Pending(agent, tenant, priority, T0 + timedelta(seconds=age), cpu, mem)


def test_an_agent_beyond_its_tenants_quota_is_unschedulable() -> None:
    tenants = {"a": TenantUsage(agents_quota=1)}
    d = schedule([pending("1", "a"), pending("2", "a", age=1)], [Node("n", 10_000, 10**9)], tenants)
    assert d.admitted == {"1": "n"}
    assert "quota of 1 agents" in d.unschedulable["2"]


def test_no_node_is_overcommitted() -> None:
    nodes = [Node("small", 1000, 10**9), Node("big", 3000, 10**9)]
    d = schedule([pending(str(i), "a", cpu=1000, age=i) for i in range(5)], nodes, {})
    assert len(d.admitted) == 4 and len(d.unschedulable) == 1
    assert all(n.used_cpu_millis <= n.cpu_millis for n in nodes)


def test_higher_priority_goes_first_when_capacity_is_short() -> None:
    d = schedule(
        [pending("low", "a", cpu=1000), pending("high", "a", cpu=1000, priority=10, age=5)],
        [Node("n", 1000, 10**9)],
        {},
    )
    assert d.admitted == {"high": "n"} and "low" in d.unschedulable


def test_tenants_share_scarce_capacity_fairly() -> None:
    many_a = [pending(f"a{i}", "a", cpu=1000, age=i) for i in range(4)]
    some_b = [pending(f"b{i}", "b", cpu=1000, age=10 + i) for i in range(4)]
    d = schedule(many_a + some_b, [Node("n", 4000, 10**9)], {})
    admitted = sorted(d.admitted)
    assert admitted == ["a0", "a1", "b0", "b1"]


def test_cpu_and_memory_quota_are_enforced() -> None:
    tenants = {"a": TenantUsage(cpu_quota_millis=500, memory_quota_bytes=100)}
    d = schedule(
        [pending("cpu", "a", cpu=600), pending("mem", "a", cpu=1, mem=200, age=1)],
        [Node("n", 10_000, 10**9)],
        tenants,
    )
    assert "cpu quota" in d.unschedulable["cpu"] and "memory quota" in d.unschedulable["mem"]

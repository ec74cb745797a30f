"""Warm pools' logic on in-memory fakes: which agents match a pool, claims and misses, the
background refill, adoption after a restart, the one-time handoff and the leak sweep
(architecture/warm-pools.md). The real sandboxes: tests/integration/test_warm_pools.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from controlplane.controllers.agents.leak_sweep import remove_leaked_sandboxes
from controlplane.controllers.agents.warm_pools import WarmPools, pool_sandbox_spec
from controlplane.domain.agents.model import AgentSpec
from controlplane.domain.agents.warm_pools import (
    BOOTSTRAP_COMMAND,
    WarmPool,
    matching_pool,
    sandbox_pool_key,
)
from controlplane.domain.records import AgentRecord
from controlplane.observability import warm_pool_metrics
from controlplane.runtimes import handoff
from controlplane.runtimes.base import LABEL_WARM_POOL, SandboxSpec, SandboxState
from controlplane.runtimes.simulated import SimulatedRuntime
from controlplane.service import agents as svc
from tests.unit.fakes import FakeDatabase

IMAGE = "localhost/agentos/python-agent:0.1.0"
COMMAND = ["python3", "/agent/whoami_agent.py"]


class FolderRuntime(SimulatedRuntime):
    """The simulated runtime with a host folder per sandbox; a started sandbox that runs the
    bootstrap writes `warm-ready` as the SDK's does."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.creates: list[str] = []
        self._commands: dict[str, list[str]] = {}

    def agent_folder(self, sandbox_id: str) -> Path:
        return self.root / sandbox_id

    async def create(self, spec: SandboxSpec) -> Any:
        self.creates.append(spec.sandbox_id)
        self._commands[spec.sandbox_id] = spec.command
        self.agent_folder(spec.sandbox_id).mkdir(parents=True, exist_ok=True)
        return await super().create(spec)

    async def start(self, sandbox_id: str) -> Any:
        status = await super().start(sandbox_id)
        if self._commands.get(sandbox_id) == list(BOOTSTRAP_COMMAND):
            (self.agent_folder(sandbox_id) / handoff.READY_FILE).write_text("1")
        return status


def pool(**fields: Any) -> WarmPool:
    body = {"runtimeClass": "runc", "image": IMAGE, "command": COMMAND, "size": 3} | fields
    return WarmPool.model_validate(body)


async def agent(name: str = "who", **spec: Any) -> AgentRecord:
    body = {"image": IMAGE, "command": COMMAND, "runtime": {"class": "runc"}} | spec
    manifest: dict[str, Any] = {"apiVersion": "agentos.io/v1alpha1", "kind": "Agent"}
    manifest |= {"metadata": {"name": name}, "spec": body}
    async with FakeDatabase().uow() as uow:
        return (await svc.apply_agent(uow, "acme", manifest)).agent


def no_owners() -> Callable[[], Awaitable[set[str]]]:
    async def owned() -> set[str]:
        return set()

    return owned


@pytest.fixture
def runtime(tmp_path: Path) -> FolderRuntime:
    return FolderRuntime(tmp_path)


@pytest.fixture
async def filled(runtime: FolderRuntime) -> AsyncIterator[WarmPools]:
    """Pools with one pool of 3, running until the test ends, filled."""
    pools = WarmPools([pool()], {"runc": runtime}, no_owners(), check_s=0.05, refill_delay_s=0)
    stop = asyncio.Event()
    task = asyncio.create_task(pools.run(stop))
    await until_ready(pools, 3)
    yield pools
    stop.set()
    await task


async def until_ready(pools: WarmPools, n: int, timeout_s: float = 5.0) -> list[str]:
    (only,) = pools.pools.values()
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(pools.ready(only)) != n:
        assert asyncio.get_running_loop().time() < deadline, pools.ready(only)
        await asyncio.sleep(0.01)
    return pools.ready(only)


# -- which agents a pool serves -----------------------------------------------------------------


def test_an_agent_matches_the_pool_of_its_runtime_class_image_command_and_limits() -> None:
    limited = pool(resources={"cpu": "500m", "memory": "128Mi"})
    late_bound = {"env": [{"name": "A", "value": "1"}], "config": {"who": "me"}}

    def spec(resources: dict[str, Any]) -> AgentSpec:
        body = {"image": IMAGE, "command": COMMAND, "resources": resources} | late_bound
        return AgentSpec.model_validate(body)

    assert matching_pool([limited], spec({"limits": {"cpu": "0.5"}})) is None  # memory differs
    same = spec({"limits": {"cpu": "0.5", "memory": "128Mi"}})
    assert matching_pool([pool(), limited], same) is limited
    # Requests stand in for missing limits, as in the sandbox the agent would get.
    by_requests = spec({"requests": {"cpu": "500m", "memory": "128Mi"}})
    assert matching_pool([limited], by_requests) is limited
    assert matching_pool([pool(), limited], spec({})) == pool()


@pytest.mark.parametrize(
    "difference",
    [
        {"args": ["--x"]},
        {"command": ["python3", "/agent/tool_agent.py"]},
        {"image": "other:1"},
        {"runtime": {"class": "gvisor"}},
        {"command": []},
    ],
)
def test_an_agent_that_differs_in_what_a_sandbox_fixes_matches_no_pool(
    difference: dict[str, Any],
) -> None:
    spec = AgentSpec.model_validate({"image": IMAGE, "command": COMMAND} | difference)
    assert matching_pool([pool()], spec) is None


def test_a_pool_key_names_its_shape_not_its_size() -> None:
    assert pool(size=1).key() == pool(size=9).key()
    assert pool().key() != pool(args=["a"]).key()
    assert sandbox_pool_key(f"warm-{pool().key()}-0123abcd") == pool().key()
    for other in ("acme-who-1234abcd-1-0", "warm-who-1234abcd-1-0", "warm-0123456789"):
        assert sandbox_pool_key(other) is None


def test_a_warm_sandbox_runs_the_bootstrap_with_the_pools_limits_and_no_identity() -> None:
    p = pool(resources={"cpu": "250m", "memory": "64Mi"})
    spec = pool_sandbox_spec(p, f"warm-{p.key()}-00000000")
    assert spec.command == list(BOOTSTRAP_COMMAND)
    assert (spec.cpu_millis, spec.memory_bytes) == (250, 64 << 20)
    assert spec.agent_id == spec.tenant == ""
    assert spec.labels()[LABEL_WARM_POOL] == p.key()
    assert not any("TOKEN" in k or "GATEWAY" in k for k in spec.env)


# -- claims and refill --------------------------------------------------------------------------


async def test_the_pool_fills_to_its_size_in_the_background(
    filled: WarmPools, runtime: FolderRuntime
) -> None:
    assert len(runtime.creates) == 3
    assert all(sandbox_pool_key(s) == pool().key() for s in runtime.creates)


async def test_a_claim_takes_a_ready_sandbox_and_the_pool_refills(
    filled: WarmPools, runtime: FolderRuntime
) -> None:
    before = list(filled.ready(pool()))
    claims = warm_pool_metrics.CLAIMS.labels(result="claimed")
    counted = claims._value.get()
    taken = filled.claim(await agent())
    assert taken == before[0]
    assert claims._value.get() == counted + 1
    after = await until_ready(filled, 3)
    assert taken not in after and len(runtime.creates) == 4


async def test_a_refill_waits_for_the_claimed_agent_to_start_first(
    runtime: FolderRuntime,
) -> None:
    pools = WarmPools([pool(size=1)], {"runc": runtime}, no_owners(), refill_delay_s=0.3)
    stop = asyncio.Event()
    task = asyncio.create_task(pools.run(stop))
    await until_ready(pools, 1)
    assert pools.claim(await agent()) is not None
    await asyncio.sleep(0.1)
    assert len(runtime.creates) == 1
    await until_ready(pools, 1)
    assert len(runtime.creates) == 2
    stop.set()
    await task


async def test_an_empty_pool_is_a_miss_and_a_non_matching_agent_no_claim(
    runtime: FolderRuntime,
) -> None:
    pools = WarmPools([pool()], {"runc": runtime}, no_owners())
    misses = warm_pool_metrics.CLAIMS.labels(result="miss")
    counted = misses._value.get()
    assert pools.claim(await agent()) is None
    assert misses._value.get() == counted + 1
    assert pools.claim(await agent(args=["--other"])) is None
    assert misses._value.get() == counted + 1


async def test_a_claim_whose_phase_change_failed_goes_back_first_in_line(
    filled: WarmPools,
) -> None:
    record = await agent()
    taken = filled.claim(record)
    assert taken is not None
    filled.give_back(record, taken)
    assert filled.ready(pool())[0] == taken


async def test_a_warm_sandbox_that_stopped_is_replaced(
    filled: WarmPools, runtime: FolderRuntime
) -> None:
    dead = filled.ready(pool())[0]
    await runtime.stop(dead)
    await asyncio.sleep(0.2)
    after = await until_ready(filled, 3)
    assert dead not in after
    assert (await runtime.status(dead)).state is SandboxState.MISSING


async def test_a_restarted_controller_adopts_ready_sandboxes_no_agent_records(
    runtime: FolderRuntime,
) -> None:
    p = pool(size=2)
    first = WarmPools([p], {"runc": runtime}, no_owners(), check_s=0.05, refill_delay_s=0)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    ids = await until_ready(first, 2)
    stop.set()
    await task
    claimed, free = ids

    async def owned() -> set[str]:
        return {claimed}

    second = WarmPools([p], {"runc": runtime}, owned, check_s=0.05, refill_delay_s=0)
    stop = asyncio.Event()
    task = asyncio.create_task(second.run(stop))
    after = await until_ready(second, 2)
    stop.set()
    await task
    assert after[0] == free and claimed not in after
    assert len(runtime.creates) == 3


# -- handoff ------------------------------------------------------------------------------------


async def test_a_claimed_sandbox_is_handed_its_agent_once(
    filled: WarmPools, runtime: FolderRuntime
) -> None:
    taken = filled.claim(await agent())
    assert taken is not None
    env = {"AGENTOS_AGENT_TOKEN": "aosa_secret", "AGENT_LABEL": "x"}
    spec = SandboxSpec(
        taken, "a1", "acme", "who", IMAGE, "runc", COMMAND, ["--v"], env, config={"who": 1}
    )
    assert await filled.awaits_handoff(runtime, taken) is True
    assert await filled.hand_off(runtime, taken, spec) is True
    assert await filled.awaits_handoff(runtime, taken) is False
    assert await filled.hand_off(runtime, taken, spec) is False  # once
    folder = runtime.agent_folder(taken)
    assert json.loads((folder / handoff.CONFIG_FILE).read_text()) == {"who": 1}
    payload = json.loads((folder / handoff.HANDOFF_FILE).read_text())
    assert payload == {"argv": [*COMMAND, "--v"], "env": env}
    assert (folder / handoff.HANDOFF_FILE).stat().st_mode & 0o777 == 0o600


async def test_a_sandbox_that_is_not_warm_is_not_handed_off(runtime: FolderRuntime) -> None:
    pools = WarmPools([pool()], {"runc": runtime}, no_owners())

    spec = SandboxSpec("x", "a1", "acme", "who", IMAGE, "runc", COMMAND)
    assert await pools.hand_off(runtime, "acme-who-1234abcd-1-0", spec) is False
    cold = f"warm-{pool().key()}-00000000"  # created cold under a warm name: no warm-ready
    runtime.agent_folder(cold).mkdir()
    assert await pools.hand_off(runtime, cold, spec) is False
    assert not (runtime.agent_folder(cold) / handoff.HANDOFF_FILE).exists()


# -- the leak sweep -----------------------------------------------------------------------------


class Reads:
    def __init__(self, owned: set[str]) -> None:
        self.owned = owned

    async def sandbox_ids(self) -> set[str]:
        return set(self.owned)


async def test_the_leak_sweep_keeps_configured_pools_and_removes_the_others(
    filled: WarmPools, runtime: FolderRuntime
) -> None:
    await runtime.create(pool_sandbox_spec(pool(args=["gone"]), f"warm-{'a' * 10}-00000000"))
    await runtime.create(SandboxSpec("acme-stray-1", "x", "acme", "stray", IMAGE, "runc"))
    reads: Any = Reads(set())
    removed = await remove_leaked_sandboxes(reads, [runtime], filled.keep)
    assert removed == 2
    assert set(await runtime.list_sandboxes()) == set(filled.ready(pool()))

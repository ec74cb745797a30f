"""Leader election on a real coordination.k8s.io Lease: of candidates racing, exactly one
leads; a standby takes over only after the holder stops renewing for the lease duration, and
at once when the holder releases it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.resources.coordination_v1 import Lease

from harness import kube as kc
from operators.agent.leader import LeaderElector, LeaseSettings

pytestmark = pytest.mark.kube


@pytest.fixture
async def client() -> AsyncIterator[AsyncClient]:
    kc.kubectl("create", "namespace", kc.SYSTEM_NAMESPACE, check=False)
    api = AsyncClient(KubeConfig.from_file(kc.admin_kubeconfig()))
    yield api
    await api.close()


@pytest.fixture
def lease() -> Iterator[str]:
    """The name of this test's own Lease, deleted at the end."""
    name = f"lease-{uuid.uuid4().hex[:8]}"
    yield name
    kc.kubectl("delete", "lease", name, "-n", kc.SYSTEM_NAMESPACE, "--ignore-not-found")


def candidates(client: AsyncClient, name: str, n: int, lease_s: int = 3) -> list[LeaderElector]:
    return [
        LeaderElector(
            client,
            LeaseSettings(
                kc.SYSTEM_NAMESPACE,
                name,
                f"candidate-{i}",
                lease_duration_s=lease_s,
                renew_deadline_s=lease_s * 0.6,
                retry_period_s=0.2,
            ),
        )
        for i in range(n)
    ]


async def test_of_racing_candidates_exactly_one_leads(client: AsyncClient, lease: str) -> None:
    electors = candidates(client, lease, 4)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(e.acquire(stop)) for e in electors]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    # Give the others several retry periods to (wrongly) take it too.
    others = [t for t in tasks if t not in done]
    finished, _ = await asyncio.wait(others, timeout=1.0)
    assert not finished, "a second candidate acquired a held Lease"
    assert [e.is_leader for e in electors].count(True) == 1
    stop.set()
    await asyncio.gather(*tasks)


async def test_standby_takes_over_after_the_lease_expires_not_before(
    client: AsyncClient, lease: str
) -> None:
    leader, standby = candidates(client, lease, 2, lease_s=3)
    stop = asyncio.Event()
    assert await leader.acquire(stop)
    abandoned = time.monotonic()  # the leader never renews from here on (a crash)
    assert await standby.acquire(stop)
    waited = time.monotonic() - abandoned
    assert waited >= 3, f"took over after {waited:.1f}s, before the 3s lease ran out"
    held = await client.get(Lease, standby.settings.name, namespace=kc.SYSTEM_NAMESPACE)
    assert held.spec is not None and held.spec.holderIdentity == "candidate-1"
    assert held.spec.leaseTransitions == 1


async def test_a_released_lease_is_taken_at_once(client: AsyncClient, lease: str) -> None:
    leader, standby = candidates(client, lease, 2, lease_s=30)
    stop = asyncio.Event()
    assert await leader.acquire(stop)
    await leader.release()
    assert not leader.is_leader
    assert await asyncio.wait_for(standby.acquire(stop), 5), "standby did not take a free Lease"


async def test_a_leader_that_cannot_renew_stops_leading(client: AsyncClient, lease: str) -> None:
    (leader,) = candidates(client, lease, 1, lease_s=3)
    stop = asyncio.Event()
    assert await leader.acquire(stop)
    kc.kubectl(
        "patch",
        "lease",
        leader.settings.name,
        "-n",
        kc.SYSTEM_NAMESPACE,
        "--type=merge",
        "-p",
        '{"spec":{"holderIdentity":"someone-else"}}',
    )
    lost = await asyncio.wait_for(leader.hold(stop), 10)
    assert lost and not leader.is_leader

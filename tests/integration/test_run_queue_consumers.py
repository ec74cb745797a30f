"""Which run-queue consumers an installation lists, and so sweeps (controlplane/messaging/
run_queues.py), on a private nats-server: its own, past the server's 256 per list answer,
and those no installation marked (made before consumers carried a mark); never another
installation's."""

from __future__ import annotations

import nats
import pytest

from controlplane.domain.agents.model import RunsSpec
from controlplane.messaging.run_queues import CONSUMER_LIST_PAGE, RunQueues
from harness.nats import PrivateNats

pytestmark = pytest.mark.nats


async def test_an_installation_lists_its_own_and_unmarked_consumers_beyond_one_page(
    private_nats: PrivateNats,
) -> None:
    nc = await nats.connect(private_nats.url)
    try:
        ours, theirs = RunQueues(nc, owner="us"), RunQueues(nc, owner="them")
        await ours.setup()
        mine = {f"a{i:04d}" for i in range(CONSUMER_LIST_PAGE + 44)}
        for agent_id in sorted(mine):
            await ours.ensure_consumer("t", agent_id, RunsSpec())
        for agent_id in ("b1", "b2"):
            await theirs.ensure_consumer("t", agent_id, RunsSpec())
        legacy = RunQueues(nc)
        legacy.description = ""  # as consumers were made before the installation mark
        await legacy.ensure_consumer("t", "old1", RunsSpec())

        assert await ours.consumers() == mine | {"old1"}
        assert await theirs.consumers() == {"b1", "b2", "old1"}
    finally:
        await nc.close()

"""Warm pools in the agent controller: sandboxes started ahead, claimed by agents, refilled
in the background (architecture/warm-pools.md, adr/0020-warm-pools-late-binding.md).

`WarmPools` keeps, per configured pool, the warm sandboxes that are ready (started, their
bootstrap waiting: `warm-ready`) and unclaimed, in memory. It can rebuild that list at any
time from the runtime (sandbox ids `warm-<pool key>-<hex>`) minus the sandbox ids agents
record, so a `kill -9` loses nothing:

- `claim(record)` (Scheduled → Starting) takes a ready sandbox of the agent's pool, if any;
  the reconciler records its id on the agent as for a sandbox it would create, before the
  handoff. A claim whose phase change fails goes back with `give_back`.
- `hand_off(...)` (Starting) writes the agent's config, environment and credential into the
  sandbox's folder (runtimes/handoff.py) once: a folder already handed off is left alone.
- `run(stop)` refills each pool to its size, replaces warm sandboxes that stopped, and shrinks
  pools that grew too big; a claim wakes it at once.
- `keep(listed)` names the pools' sandboxes for the leak sweep; those of a pool no longer
  configured are the sweep's to remove.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable

import structlog

from controlplane.controllers.agents.sandbox import distinct_runtimes
from controlplane.domain.agents.warm_pools import (
    BOOTSTRAP_COMMAND,
    SANDBOX_PREFIX,
    WarmPool,
    matching_pool,
    sandbox_pool_key,
)
from controlplane.domain.records import AgentRecord
from controlplane.observability import warm_pool_metrics as metrics
from controlplane.runtimes.base import (
    ProbeSpec,
    Runtime,
    SandboxError,
    SandboxSpec,
    SandboxState,
)
from controlplane.runtimes.capabilities import capabilities
from controlplane.runtimes.handoff import HandoffState, handoff_state, write_handoff

log = structlog.get_logger("agentos.controller")

WARM_POOL_ENV = "AGENTOS_WARM_POOL"


class WarmPools:
    """The warm pools of one controller (see the module docstring).

    `pools`: the configured pools (config `AGENTOS_WARM_POOLS`). `runtimes`: runtime class →
    runtime; a pool whose runtime has no `AgentFolders` capability is never filled.
    `owned()`: the sandbox ids agents record. `check_s`: seconds between health checks when
    nothing wakes the loop; `refill_delay_s`: how long a refill waits after a claim, so that
    creating sandboxes does not compete for the CPU with the claimed agent's start (claims
    in the meantime are refilled together); `ready_timeout_s`: how long a new sandbox may
    take to be warm.
    """

    def __init__(
        self,
        pools: Iterable[WarmPool],
        runtimes: dict[str, Runtime],
        owned: Callable[[], Awaitable[set[str]]],
        *,
        check_s: float = 5.0,
        refill_delay_s: float = 0.5,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.pools = {p.key(): p for p in pools}
        self._runtimes = runtimes
        self._owned = owned
        self.check_s = check_s
        self.refill_delay_s = refill_delay_s
        self.ready_timeout_s = ready_timeout_s
        self._ready: dict[str, list[str]] = {key: [] for key in self.pools}
        self._creating: set[str] = set()
        self._claimed_at: dict[str, float] = {}
        self._wake = asyncio.Event()
        self.created = 0  # warm sandboxes this process created (tests, benchmarks)

    # -- the claim path -----------------------------------------------------------------------

    def claim(self, record: AgentRecord) -> str | None:
        """A ready sandbox of the pool `record` matches, taken out of the pool; None when it
        matches none or its pool has none ready (a miss: the agent gets a new sandbox). A
        pool whose runtime cannot hold warm sandboxes is never filled and counts no miss."""
        pool = matching_pool(list(self.pools.values()), record.spec)
        if pool is None or self._runtime(pool) is None:
            return None
        ready = self._ready[pool.key()]
        sandbox_id = ready.pop(0) if ready else None
        metrics.claim(sandbox_id is not None)
        self._report(pool)
        self._wake.set()
        if sandbox_id is not None:
            self._claimed_at[record.id] = time.monotonic()
        return sandbox_id

    def give_back(self, record: AgentRecord, sandbox_id: str) -> None:
        """Return a claimed sandbox whose claim was not recorded (the phase change failed)."""
        self._claimed_at.pop(record.id, None)
        key = sandbox_pool_key(sandbox_id)
        if key in self._ready:
            self._ready[key].insert(0, sandbox_id)
            self._report(self.pools[key])

    async def awaits_handoff(self, runtime: Runtime, sandbox_id: str) -> bool:
        """True for a warm sandbox whose bootstrap still waits for its agent (no handoff
        written); False for any other sandbox.

        The claim path's file operations (a few stat calls, two small writes in a local
        folder: well under a millisecond) run on the event loop: a thread hop costs more
        than that on a busy host, and this path is what an agent waits for."""
        folders = capabilities(runtime).folders
        if sandbox_pool_key(sandbox_id) is None or folders is None:
            return False
        return handoff_state(folders.agent_folder(sandbox_id)) is HandoffState.WARM

    async def hand_off(self, runtime: Runtime, sandbox_id: str, spec: SandboxSpec) -> bool:
        """Hand a claimed warm sandbox its agent: `spec` is the agent's SandboxSpec (its env
        with a new credential, its config, command and args). True when handed off now;
        False for a sandbox that is not warm or was handed off already. Raises
        SandboxError("HandoffFailed") when the sandbox's folder cannot be written."""
        folders = capabilities(runtime).folders
        if folders is None or not await self.awaits_handoff(runtime, sandbox_id):
            return False
        folder = folders.agent_folder(sandbox_id)
        argv = [*spec.command, *spec.args]
        try:
            write_handoff(folder, argv, spec.env, spec.config)
        except OSError as exc:
            raise SandboxError("HandoffFailed", f"cannot hand off {sandbox_id}: {exc}") from exc
        return True

    async def until_started(
        self,
        runtime: Runtime,
        sandbox_id: str,
        probe: ProbeSpec | None,
        unpublished: Callable[[], Awaitable[int]] | None,
        *,
        answer_s: float = 0.5,
        publish_s: float = 0.25,
    ) -> bool:
        """After a handoff: probe the agent every 5 ms for up to `answer_s` seconds, then wait
        (every 5 ms, up to `publish_s`) until `unpublished()` (the agent's events the relay
        has not published; Ready waits for them) is 0. True when both happened in time.

        The claim's reconcile waits here rather than going back to the queue (a read of the
        agent and its sandbox per look) for an agent that starts in about 10 ms."""
        answered = (
            await _poll(lambda: runtime.probe(sandbox_id, probe), answer_s) if probe else True
        )
        if unpublished is None:
            return answered

        async def published() -> bool:
            return not await unpublished()

        return answered and await _poll(published, publish_s)

    def observe_ready(self, agent_id: str) -> None:
        """The agent is Ready: observe claim → Ready if it claimed a warm sandbox here."""
        claimed_at = self._claimed_at.pop(agent_id, None)
        if claimed_at is not None:
            metrics.claim_ready(time.monotonic() - claimed_at)

    def keep(self, listed: Iterable[str]) -> set[str]:
        """Of the sandbox ids `listed` by a runtime, those of configured pools, and the ones
        being created (their network may exist before their container)."""
        return {s for s in listed if sandbox_pool_key(s) in self.pools} | self._creating

    def ready(self, pool: WarmPool) -> list[str]:
        """The ready sandboxes of `pool`, oldest first (a copy)."""
        return list(self._ready.get(pool.key(), []))

    # -- the background loop ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Adopt the pools' sandboxes, then keep every pool at its size until `stop`."""
        if not self.pools:
            return
        await self._adopt()
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self._check()
                    await self._refill()
                except SandboxError as exc:  # e.g. containerd unreachable: retried next pass
                    log.warning("warm pools not refilled", error=str(exc))
                woken = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {woken, stopping}, timeout=self.check_s, return_when=asyncio.FIRST_COMPLETED
                )
                woken.cancel()
                if self._wake.is_set() and self.refill_delay_s > 0:
                    await asyncio.wait({stopping}, timeout=self.refill_delay_s)
        finally:
            stopping.cancel()

    def _runtime(self, pool: WarmPool) -> Runtime | None:
        runtime = self._runtimes.get(pool.runtimeClass)
        if runtime is None or capabilities(runtime).folders is None:
            return None
        return runtime

    async def _adopt(self) -> None:
        """Ready sandboxes of configured pools that no agent records become the pools' again
        (a restart); any other of their sandboxes (half made, stopped) is removed."""
        owned = await self._owned()
        served = [r for r in distinct_runtimes(self._runtimes) if capabilities(r).folders]
        for runtime in served:
            for sandbox_id in await runtime.list_sandboxes():
                key = sandbox_pool_key(sandbox_id)
                if key not in self.pools or sandbox_id in owned:
                    continue
                if await self._is_warm(runtime, sandbox_id):
                    self._ready[key].append(sandbox_id)
                else:
                    await runtime.remove(sandbox_id)
        for pool in self.pools.values():
            self._report(pool)

    async def _is_warm(self, runtime: Runtime, sandbox_id: str) -> bool:
        folders = capabilities(runtime).folders
        state = await runtime.status(sandbox_id)
        if state.state is not SandboxState.RUNNING or folders is None:
            return False
        folder = folders.agent_folder(sandbox_id)
        return await asyncio.to_thread(handoff_state, folder) is HandoffState.WARM

    async def _check(self) -> None:
        """Remove ready sandboxes that stopped (their bootstrap died)."""
        for key, ready in self._ready.items():
            runtime = self._runtime(self.pools[key])
            if runtime is None:
                continue
            for sandbox_id in list(ready):
                state = await runtime.status(sandbox_id)
                if state.state is not SandboxState.RUNNING and sandbox_id in ready:
                    ready.remove(sandbox_id)
                    log.warning("warm sandbox stopped", sandbox=sandbox_id, state=state.state)
                    await runtime.remove(sandbox_id)

    async def _refill(self) -> None:
        """Create what each pool lacks, all at once; remove what it has too many of."""
        work: list[Awaitable[None]] = []
        for key, pool in self.pools.items():
            runtime = self._runtime(pool)
            if runtime is None:
                continue
            ready = self._ready[key]
            creating = sum(1 for s in self._creating if sandbox_pool_key(s) == key)
            work += [self._create(pool, runtime) for _ in range(pool.size - len(ready) - creating)]
            while len(ready) > pool.size:
                work.append(runtime.remove(ready.pop()))
            self._report(pool)
        if work:
            await asyncio.gather(*work)

    async def _create(self, pool: WarmPool, runtime: Runtime) -> None:
        """One warm sandbox: created, started, ready once its bootstrap writes `warm-ready`.
        A failure is logged and the sandbox removed; the next pass tries again."""
        key = pool.key()
        sandbox_id = f"{SANDBOX_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
        self._creating.add(sandbox_id)
        try:
            await runtime.create(pool_sandbox_spec(pool, sandbox_id))
            await runtime.start(sandbox_id)
            await self._until_warm(runtime, sandbox_id)
            self._ready[key].append(sandbox_id)
            self.created += 1
            self._report(pool)
        except (SandboxError, OSError, TimeoutError) as exc:
            log.warning("warm sandbox not started", pool=key, sandbox=sandbox_id, error=str(exc))
            await runtime.remove(sandbox_id)
        finally:
            self._creating.discard(sandbox_id)

    async def _until_warm(self, runtime: Runtime, sandbox_id: str) -> None:
        """Wait (polling every 10 ms) until the bootstrap is ready. Raises SandboxError when
        the sandbox stopped, TimeoutError after `ready_timeout_s`."""
        folders = capabilities(runtime).folders
        assert folders is not None
        folder = folders.agent_folder(sandbox_id)
        deadline = time.monotonic() + self.ready_timeout_s
        while await asyncio.to_thread(handoff_state, folder) is not HandoffState.WARM:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not warm within {self.ready_timeout_s:.0f}s")
            state = await runtime.status(sandbox_id)
            if state.state is not SandboxState.RUNNING:
                logs = (await runtime.logs(sandbox_id, 5)).strip()
                raise SandboxError("SandboxExited", f"{state.state.value}: {logs}")
            await asyncio.sleep(0.01)

    def _report(self, pool: WarmPool) -> None:
        metrics.pool_size(pool.runtimeClass, pool.image, len(self._ready[pool.key()]))


async def _poll(check: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    """`check()` every 5 ms until it holds (True) or `timeout_s` seconds passed (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.005)
        if await check():
            return True
    return False


def pool_sandbox_spec(pool: WarmPool, sandbox_id: str) -> SandboxSpec:
    """A warm sandbox of `pool`: the pool's image, runtime class and limits, the SDK's
    bootstrap as its command, no agent, no tenant, no credential."""
    cpu, memory = pool.limits()
    return SandboxSpec(
        sandbox_id=sandbox_id,
        agent_id="",
        tenant="",
        name=f"warm-{pool.key()}",
        image=pool.image,
        runtime_class=pool.runtimeClass,
        command=list(BOOTSTRAP_COMMAND),
        env={WARM_POOL_ENV: pool.key()},
        cpu_millis=cpu,
        memory_bytes=memory,
        warm_pool=pool.key(),
    )

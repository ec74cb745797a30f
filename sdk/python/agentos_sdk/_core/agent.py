"""`Agent`: the handler and tool registry, and the pull loop that serves runs."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, overload

from agentos_sdk._core.config import Settings, load_settings
from agentos_sdk._core.errors import AuthenticationError, GatewayError
from agentos_sdk._core.gateway import GatewayClient
from agentos_sdk._core.liveness import HEARTBEAT_FILE, touch_forever
from agentos_sdk._core.protocol import Delivery
from agentos_sdk._core.run import Run
from agentos_sdk._core.tools import Tool, ToolRegistry
from agentos_sdk._core.worker import Handler, RunExecution

F = TypeVar("F", bound=Callable[..., Any])
H = TypeVar("H", bound=Handler)
log = logging.getLogger("agentos_sdk")


class Agent:
    """An agent's code as Agent OS runs it: one run handler, its tools, and `serve()`.

    Settings come from the environment the control plane sets in the sandbox
    (`AGENTOS_GATEWAY_URL`, `AGENTOS_AGENT_TOKEN`, `AGENTOS_RUN_CONCURRENCY` default 1,
    `AGENTOS_HEARTBEAT_SECONDS` default 5); a keyword argument overrides its variable.
    `drain_seconds`: on stop, how long in-flight runs may finish before they are abandoned
    (and redelivered). `poll_seconds`: the `runs:next` long poll (0 to 30).
    `heartbeat_file`: the sandbox's liveness file (default `AGENTOS_HEARTBEAT_FILE`; "" for
    none), touched every `heartbeat_file_seconds` (default 0.3 s, well inside a 1 s readiness
    period) while serving, so an agent with `readiness: {heartbeat: {}}` is Ready while it
    serves.

    Raises ConfigError, naming the variable, when a setting is missing or malformed.
    """

    def __init__(
        self,
        *,
        gateway_url: str | None = None,
        token: str | None = None,
        concurrency: int | None = None,
        heartbeat_seconds: float | None = None,
        drain_seconds: float = 30.0,
        poll_seconds: float = 20.0,
        heartbeat_file: str | Path | None = None,
        heartbeat_file_seconds: float = 0.3,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings: Settings = load_settings(
            environ,
            gateway_url=gateway_url,
            token=token,
            concurrency=concurrency,
            heartbeat_s=heartbeat_seconds,
        )
        self.drain_seconds = drain_seconds
        self.poll_seconds = poll_seconds
        if heartbeat_file is None:
            heartbeat_file = (os.environ if environ is None else environ).get(HEARTBEAT_FILE, "")
        self.heartbeat_file: Path | None = Path(heartbeat_file) if heartbeat_file else None
        self.heartbeat_file_seconds = heartbeat_file_seconds
        self._handler: Handler | None = None
        self._tools = ToolRegistry()

    def run(self, handler: H) -> H:
        """Register `async def handle(run: Run) -> JSON` as the run handler (a decorator).

        Raises ValueError when a handler is already registered, TypeError when `handler` is
        not a coroutine function.
        """
        if self._handler is not None:
            raise ValueError("this agent already has a run handler")
        candidate: Any = handler
        if not inspect.iscoroutinefunction(candidate):
            raise TypeError("the run handler must be an `async def` function")
        self._handler = handler
        return handler

    @overload
    def tool(self, fn: F, /) -> F: ...

    @overload
    def tool(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        destructive: bool = False,
        description: str | None = None,
    ) -> Callable[[F], F]: ...

    def tool(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        destructive: bool = False,
        description: str | None = None,
    ) -> Any:
        """Register a tool (a plain function or a coroutine function); `@agent.tool` or
        `@agent.tool(name=..., destructive=..., description=...)`. The function is returned
        unchanged; call it in a run with `run.call_tool(fn, **arguments)`.

        The name defaults to the function's, the description to its docstring's first
        paragraph, the input schema is read from its signature. Raises ValueError for a
        taken or malformed name.
        """

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            self._tools.add(Tool.of(f, name=name, description=description, destructive=destructive))
            return f

        return register(fn) if fn is not None else register

    @property
    def tools(self) -> list[Tool]:
        """The registered tools, in registration order."""
        return list(self._tools)

    def serve(self) -> None:
        """Serve runs until SIGTERM or SIGINT, then stop gracefully (see `serve_async`).

        Configures logging at INFO when the program has not. Raises what `serve_async` raises.
        """
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await self.serve_async(stop)

        asyncio.run(main())

    async def serve_async(self, stop_event: asyncio.Event | None = None) -> None:
        """Pull runs (`runs:next`) and execute up to `concurrency` at once until `stop_event`.

        On stop no new run is taken; runs in flight get `drain_seconds` to finish, then are
        abandoned (cancelled, released, nothing reported: the control plane redelivers
        them). Unreachable gateways are retried with backoff (0.5 s to 10 s). The heartbeat
        file, when there is one, is touched while this runs.

        Raises AuthenticationError when the gateway refuses the token (401), RuntimeError
        when no handler is registered.
        """
        if self._handler is None:
            raise RuntimeError("no run handler: decorate one with @agent.run")
        stop_event = stop_event or asyncio.Event()
        gateway = GatewayClient(self.settings)
        loop = _Loop(self, self._handler, gateway)
        puller = asyncio.create_task(loop.pull(), name="agentos pull loop")
        waits = [asyncio.create_task(event.wait()) for event in (stop_event, loop.halted)]
        alive = self._liveness()
        try:
            await asyncio.wait({puller, *waits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (puller, *waits):
                task.cancel()
            # Cancelling the poll closes its connection: the gateway keeps that delivery.
            await asyncio.gather(puller, *waits, return_exceptions=True)
            await loop.drain(self.drain_seconds)
            await gateway.close()
            if alive is not None:
                alive.cancel()
                await asyncio.gather(alive, return_exceptions=True)
        if not puller.cancelled() and puller.exception() is not None:
            raise puller.exception()  # type: ignore[misc]
        if loop.fatal is not None:
            raise loop.fatal

    def _liveness(self) -> asyncio.Task[None] | None:
        if self.heartbeat_file is None:
            return None
        beat = touch_forever(self.heartbeat_file, self.heartbeat_file_seconds)
        return asyncio.create_task(beat, name="agentos heartbeat file")


class _Loop:
    """The pull loop: a free slot, then a long poll, then the run's execution as a task."""

    def __init__(self, agent: Agent, handler: Handler, gateway: GatewayClient) -> None:
        self._agent = agent
        self._handler = handler
        self._gateway = gateway
        self._slots = asyncio.Semaphore(agent.settings.concurrency)
        self.running: set[asyncio.Task[None]] = set()
        self.halted = asyncio.Event()
        self.fatal: BaseException | None = None

    async def pull(self) -> None:
        """Take runs until cancelled. Raises AuthenticationError on a 401."""
        backoff_s = 0.5
        while True:
            await self._slots.acquire()
            try:
                delivery = await self._gateway.next_run(self._agent.poll_seconds)
            except AuthenticationError:
                raise
            except GatewayError as exc:
                self._slots.release()
                log.warning("agent gateway unreachable (%s); retrying in %.1fs", exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(10.0, backoff_s * 2)
                continue
            backoff_s = 0.5
            if delivery is None:
                self._slots.release()
            else:
                self._start(delivery)

    async def drain(self, drain_s: float) -> None:
        """Wait up to `drain_s` seconds for runs in flight, then abandon the rest."""
        if not self.running:
            return
        log.info("stopping: %d run(s) in flight, %.0fs to finish", len(self.running), drain_s)
        _, pending = await asyncio.wait(set(self.running), timeout=drain_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _start(self, delivery: Delivery) -> None:
        run = Run(delivery, self._gateway, self._agent._tools)
        execution = RunExecution(
            run, self._handler, self._gateway, heartbeat_s=self._agent.settings.heartbeat_s
        )
        task = asyncio.create_task(execution.run_to_end(), name=f"execute {run.name}")
        self.running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self._slots.release()
        if not task.cancelled() and isinstance(task.exception(), AuthenticationError):
            self.fatal = task.exception()
            self.halted.set()

"""One run's execution: the handler task, its heartbeats, its deadline, and its report.

Rules (architecture/gateway-protocol.md): a heartbeat every `heartbeat_s` seconds; a
heartbeat answering `cancelRequested` or 409 `RUN_FINISHED`, or the deadline passing,
cancels the handler task and nothing more is reported for the run; otherwise its return
value is reported as the output, or its exception as the error. When the agent stops and
abandons the run, the delivery is released so the control plane redelivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from agentos_sdk._core.errors import AuthenticationError, GatewayError, RunFinishedError
from agentos_sdk._core.gateway import GatewayClient
from agentos_sdk._core.protocol import JSON, ErrorBody, now, parse_rfc3339
from agentos_sdk._core.run import Run

Handler = Callable[[Run], Coroutine[Any, Any, Any]]
log = logging.getLogger("agentos_sdk")


class RunExecution:
    """Executes `handler(run)` under heartbeats and the deadline; `await execution.run_to_end()`.

    `grace_s`: how long a cancelled handler may take to stop before it is left behind
    (seconds). Raises AuthenticationError when the gateway refuses the token; other gateway
    errors are logged (the delivery is then redelivered by the control plane).
    """

    def __init__(
        self,
        run: Run,
        handler: Handler,
        gateway: GatewayClient,
        *,
        heartbeat_s: float,
        grace_s: float = 10.0,
    ) -> None:
        self.run = run
        self._handler = handler
        self._gateway = gateway
        self._heartbeat_s = heartbeat_s
        self._grace_s = grace_s
        self._task: asyncio.Task[Any] | None = None
        self._gave_up = asyncio.Event()
        self._deadline_timer: asyncio.TimerHandle | None = None

    async def run_to_end(self) -> None:
        """Execute the handler and report its outcome; cancelling this abandons the run."""
        name = self.run.name
        log.info("run %s attempt %d started", name, self.run.attempt)
        task = self._task = asyncio.create_task(self._handler(self.run), name=f"run {name}")
        beats = asyncio.create_task(self._heartbeats(), name=f"heartbeats {name}")
        self._schedule_deadline()
        gave_up = asyncio.create_task(self._gave_up.wait())
        try:
            await asyncio.wait({task, gave_up}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self._abandon(task)
            raise
        finally:
            beats.cancel()
            gave_up.cancel()
            if self._deadline_timer:
                self._deadline_timer.cancel()
        if self.run.cancelled:
            state = "stopped" if task.done() else "left behind (it ignored the cancellation)"
            log.info("run %s %s: %s; nothing reported", name, self.run.cancel_reason, state)
            return
        await self._report(task)

    def stop(self, reason: str) -> None:
        """Cancel the handler for `reason` (`canceled`, `deadline`, `finished`)."""
        task = self._task
        if task is None or task.done() or self.run.cancelled:
            return
        self.run.cancel_reason = reason
        task.cancel(f"agentos: run {reason}")
        asyncio.get_running_loop().call_later(self._grace_s, self._gave_up.set)

    async def _report(self, task: asyncio.Task[Any]) -> None:
        name = self.run.name
        error: ErrorBody | None = None
        output: JSON = None
        if task.cancelled():
            error = {"type": "CancelledError", "message": "the handler was cancelled"}
        elif (exc := task.exception()) is not None:
            log.error("run %s failed", name, exc_info=exc)
            error = {"type": type(exc).__name__, "message": str(exc)}
        else:
            try:
                output = json.loads(json.dumps(task.result(), allow_nan=False))
            except (TypeError, ValueError) as exc:
                error = {"type": type(exc).__name__, "message": f"the result is not JSON: {exc}"}
        try:
            if error:
                await self._gateway.report_error(name, error, self.run.attempt)
            else:
                await self._gateway.report_output(name, output, self.run.attempt)
        except RunFinishedError:
            log.info("run %s had already ended; its result was not recorded", name)
        except AuthenticationError:
            raise
        except GatewayError as exc:
            log.error("run %s: the result could not be reported (%s)", name, exc)
        else:
            log.info("run %s %s", name, "failed" if error else "succeeded")

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                reply = await self._gateway.heartbeat(self.run.name, self.run.attempt)
            except RunFinishedError:
                self.stop("finished")
                return
            except GatewayError as exc:
                log.warning("run %s: heartbeat failed (%s)", self.run.name, exc)
                continue
            if reply.get("cancelRequested"):
                self.stop("canceled")
                return
            if "deadline" in reply and parse_rfc3339(reply["deadline"]) != self.run.deadline:
                self.run.deadline = parse_rfc3339(reply["deadline"])
                self._schedule_deadline()

    def _schedule_deadline(self) -> None:
        if self._deadline_timer:
            self._deadline_timer.cancel()
        delay_s = (self.run.deadline - now()).total_seconds()
        loop = asyncio.get_running_loop()
        self._deadline_timer = loop.call_later(max(0.0, delay_s), self.stop, "deadline")

    async def _abandon(self, task: asyncio.Task[Any]) -> None:
        """The agent stops: cancel the handler, give the delivery back, report nothing."""
        self.run.cancel_reason = self.run.cancel_reason or "abandoned"
        task.cancel("agentos: the agent is stopping")
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(task), self._grace_s)
        try:
            await self._gateway.release(self.run.name, self.run.attempt)
        except GatewayError as exc:
            log.info(
                "run %s abandoned; not released (%s), redelivered after the ack wait",
                self.run.name,
                exc,
            )
        else:
            log.info("run %s abandoned and released for redelivery", self.run.name)

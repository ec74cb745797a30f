"""FakeGateway: the agent gateway's run protocol (architecture/gateway-protocol.md) in
memory, served by aiohttp on a loopback port — a fake of our own port for the SDK's unit
tests. The real gateway, on JetStream and the database, is tested by the integration suite.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

PREFIX = "/gateway/v1"


@dataclass
class FakeRun:
    """One run as the fake keeps it; `steps` are every step reported, in order."""

    name: str
    input: Any
    attempt: int = 1
    timeout_s: float = 60.0
    deadline: datetime = field(default_factory=lambda: datetime.now(UTC) + timedelta(minutes=1))
    journal: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    result_attempt: int | None = None
    finished: bool = False
    cancel_requested: bool = False
    heartbeats: int = 0
    releases: int = 0
    approval: str = "none"
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def delivery(self) -> dict[str, Any]:
        return {
            "run": {
                "name": self.name,
                "agent": "calc",
                "tenant": "acme",
                "attempt": self.attempt,
                "input": self.input,
                "timeoutSeconds": int(self.timeout_s),
                "deadline": self.deadline.isoformat().replace("+00:00", "Z"),
                "labels": {},
                "traceparent": None,
                "approval": self.approval,
            },
            "journal": {"steps": list(self.journal), "checkpoint": self.checkpoint},
        }


def _problem(status: int, code: str, detail: str) -> web.Response:
    body = {"type": "about:blank", "title": code, "status": status, "code": code, "detail": detail}
    return web.json_response(body, status=status, content_type="application/problem+json")


class FakeGateway:
    """`await start()` → the base URL; `submit(...)` queues a run; `redeliver(name)` queues
    its next attempt with the steps and checkpoint recorded so far (as the control plane
    does after a crash); `release` (the SDK stopping) redelivers at once."""

    def __init__(self, token: str = "agent-token") -> None:
        self.token = token
        self.runs: dict[str, FakeRun] = {}
        self.queue: asyncio.Queue[FakeRun] = asyncio.Queue()
        self.connections: set[int] = set()
        self.polling: collections.Counter[str] = collections.Counter()  # token → polls open
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host`:`port` (0: any free port); the base URL."""
        app = web.Application(middlewares=[self._auth])
        app.router.add_post(PREFIX + "/runs:next", self._next)
        app.router.add_post(PREFIX + "/runs/{run}/heartbeat", self._heartbeat)
        app.router.add_post(PREFIX + "/runs/{run}/steps", self._step)
        app.router.add_post(PREFIX + "/runs/{run}/checkpoint", self._checkpoint)
        app.router.add_post(PREFIX + "/runs/{run}/result", self._result)
        app.router.add_post(PREFIX + "/runs/{run}/release", self._release)
        app.router.add_post(PREFIX + "/runs/{run}/approvals", self._ask)
        app.router.add_get(PREFIX + "/runs/{run}/approvals/{approval}", self._wait_decision)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def submit(self, input: Any = None, *, name: str | None = None, **fields: Any) -> FakeRun:
        run = FakeRun(name=name or f"run-{len(self.runs) + 1}", input=input, **fields)
        self.runs[run.name] = run
        self.queue.put_nowait(run)
        return run

    def redeliver(self, name: str) -> FakeRun:
        run = self.runs[name]
        run.attempt += 1
        run.journal = [dict(s) for s in run.steps if s["status"] in ("succeeded", "failed")]
        run.checkpoint = run.checkpoints[-1] if run.checkpoints else None
        self.queue.put_nowait(run)
        return run

    async def wait_done(self, name: str, timeout_s: float = 5.0) -> FakeRun:
        run = self.runs[name]
        await asyncio.wait_for(run.done.wait(), timeout_s)
        return run

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _problem(401, "UNAUTHENTICATED", "no valid agent credential")
        if request.transport is not None:
            self.connections.add(id(request.transport))
        response: web.StreamResponse = await handler(request)
        return response

    def _run(self, request: web.Request) -> FakeRun:
        run = self.runs.get(request.match_info["run"])
        if run is None:
            raise web.HTTPNotFound()
        return run

    async def _next(self, request: web.Request) -> web.Response:
        wait_s = (await request.json()).get("waitSeconds", 20)
        token = request.headers["Authorization"].partition(" ")[2]
        self.polling[token] += 1
        try:
            run = await asyncio.wait_for(self.queue.get(), wait_s)
        except TimeoutError:
            return web.Response(status=204)
        finally:
            self.polling[token] -= 1
            if not self.polling[token]:
                del self.polling[token]
        if request.transport is None or request.transport.is_closing():
            self.queue.put_nowait(run)  # the client left: keep the delivery
            return web.Response(status=204)
        return web.json_response(run.delivery())

    async def _heartbeat(self, request: web.Request) -> web.Response:
        run = self._run(request)
        run.heartbeats += 1
        if run.finished:
            return _problem(409, "RUN_FINISHED", f"run {run.name} has ended")
        deadline = run.deadline.isoformat().replace("+00:00", "Z")
        return web.json_response({"cancelRequested": run.cancel_requested, "deadline": deadline})

    async def _step(self, request: web.Request) -> web.Response:
        run = self._run(request)
        step = await request.json()
        if step["callId"] not in {s["callId"] for s in run.steps}:
            run.steps.append(step)
        return web.json_response({"recorded": True})

    async def _checkpoint(self, request: web.Request) -> web.Response:
        body = await request.json()
        body.pop("attempt", None)
        self._run(request).checkpoints.append(body)
        return web.Response(status=204)

    async def _result(self, request: web.Request) -> web.Response:
        run = self._run(request)
        body = await request.json()
        if run.result is not None:
            return web.json_response({})
        if run.finished:
            return _problem(409, "RUN_FINISHED", f"run {run.name} has ended")
        # The attempt fences a superseded holder (architecture/gateway-protocol.md); the fake
        # keeps it apart from the result itself.
        run.result_attempt = body.pop("attempt", None)
        run.result, run.finished = body, True
        run.done.set()
        return web.json_response({})

    async def _release(self, request: web.Request) -> web.Response:
        run = self._run(request)
        run.releases += 1
        self.redeliver(run.name)
        return web.Response(status=204)

    def decide(
        self, name: str, call_id: str, state: str, edits: dict[str, Any] | None = None
    ) -> None:
        """A human decides the approval of run `name` for step `call_id`."""
        approval = self.runs[name].approvals[call_id]
        approval.update(
            state=state,
            edits=edits,
            arguments={**approval["details"], **(edits or {})},
            decidedBy="ann",
            comment="by the fake",
        )

    async def _ask(self, request: web.Request) -> web.Response:
        run = self._run(request)
        body = await request.json()
        call_id = body["callId"]
        if call_id not in run.approvals:  # idempotent by callId, as the real gateway
            run.approvals[call_id] = {
                "id": f"ap-{call_id}", "run": run.name, "step": call_id,
                "action": body["action"], "details": body["details"], "state": "pending",
                "arguments": body["details"], "edits": None, "comment": "",
                "decidedBy": None, "decidedAt": None, "expiresAt": None,
            }  # fmt: skip
        return web.json_response(run.approvals[call_id])

    async def _wait_decision(self, request: web.Request) -> web.Response:
        run = self._run(request)
        [approval] = [
            a for a in run.approvals.values() if a["id"] == request.match_info["approval"]
        ]
        until = asyncio.get_running_loop().time() + float(request.query.get("waitSeconds", 0))
        while approval["state"] == "pending" and asyncio.get_running_loop().time() < until:
            await asyncio.sleep(0.02)
        return web.json_response(approval)

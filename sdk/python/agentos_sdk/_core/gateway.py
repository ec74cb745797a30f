"""The agent gateway client: one method per endpoint of architecture/gateway-protocol.md.

Transport failures, 429 and 5xx are retried with exponential backoff (every endpoint is
idempotent or, for `runs:next`, a pull the gateway redelivers); 401 raises
AuthenticationError, 409 `RUN_FINISHED` raises RunFinishedError, other statuses raise
GatewayError. Nothing here knows about handlers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, cast
from urllib.parse import quote

from agentos_sdk._core.config import Settings
from agentos_sdk._core.errors import AuthenticationError, GatewayError, RunFinishedError
from agentos_sdk._core.http import ConnectionPool, Response
from agentos_sdk._core.models import ModelClient
from agentos_sdk._core.protocol import (
    JSON,
    ApprovalBody,
    Delivery,
    ErrorBody,
    HeartbeatReply,
    StepReport,
)

PREFIX = "/gateway/v1"
USER_AGENT = "agentos-sdk-python/0.1.0"
MAX_WAIT_S = 30
# Steps, checkpoints and results are retried this long (seconds) through transport errors,
# 429 and 5xx: a control plane that restarts must not cost a recorded step (a step whose
# report is lost runs again on the next attempt).
REPORT_PATIENCE_S = 120.0
log = logging.getLogger("agentos_sdk")


class GatewayClient:
    """Speaks the run protocol (v1) to `settings.gateway_url` with the agent's token.

    `retries`: attempts per request on transport errors, 429 and 5xx (≥ 1);
    `timeout_s`: per request, seconds (a long poll adds its own wait).
    """

    def __init__(self, settings: Settings, *, retries: int = 5, timeout_s: float = 15.0) -> None:
        self._pool = ConnectionPool(settings.gateway_url, max_idle=settings.concurrency * 2 + 2)
        self.models = ModelClient(settings.gateway_url, settings.token)
        self._headers = {
            "Authorization": f"Bearer {settings.token}",
            "Content-Type": "application/json",
            "Accept": "application/json, application/problem+json",
            "User-Agent": USER_AGENT,
        }
        self._retries = max(1, retries)
        self._timeout_s = timeout_s

    async def next_run(self, wait_s: float) -> Delivery | None:
        """The next run and its journal, or None when none came within `wait_s` (0 to 30 s)."""
        wait = max(0, min(MAX_WAIT_S, round(wait_s)))
        response = await self._call(
            "POST", "/runs:next", {"waitSeconds": wait}, timeout_s=self._timeout_s + wait
        )
        return None if response.status == 204 else cast(Delivery, _json(response))

    async def heartbeat(self, run: str, attempt: int) -> HeartbeatReply:
        """Keep the run's delivery `attempt` alive. Raises RunFinishedError when the run is
        terminal, or when another attempt superseded this one."""
        body: JSON = {"attempt": attempt}
        return cast(HeartbeatReply, _json(await self._call("POST", _run(run, "heartbeat"), body)))

    async def record_step(self, run: str, step: StepReport) -> None:
        """Record one finished step; idempotent by its callId."""
        await self._call("POST", _run(run, "steps"), cast(JSON, step), patience_s=REPORT_PATIENCE_S)

    async def checkpoint(self, run: str, state: JSON, call_id: str | None, attempt: int) -> None:
        """Save `state` as the run's last checkpoint (after step `call_id`)."""
        body: JSON = {"state": state, "callId": call_id, "attempt": attempt}
        await self._call("POST", _run(run, "checkpoint"), body, patience_s=REPORT_PATIENCE_S)

    async def report_output(self, run: str, output: JSON, attempt: int) -> None:
        """The run succeeded with `output`. Raises RunFinishedError if it had already ended."""
        body: JSON = {"output": output, "attempt": attempt}
        await self._call("POST", _run(run, "result"), body, patience_s=REPORT_PATIENCE_S)

    async def report_error(self, run: str, error: ErrorBody, attempt: int) -> None:
        """The run failed with `error`. Raises RunFinishedError if it had already ended."""
        body: JSON = {"error": cast(JSON, error), "attempt": attempt}
        await self._call("POST", _run(run, "result"), body, patience_s=REPORT_PATIENCE_S)

    async def release(self, run: str, attempt: int) -> None:
        """Give the delivery back at once (the agent stops): redelivered with attempt + 1."""
        await self._call("POST", _run(run, "release"), {"attempt": attempt}, retries=1)

    async def request_approval(self, run: str, body: JSON) -> ApprovalBody:
        """Ask for approval of a step (idempotent by its callId): the approval, pending or
        already decided by an earlier attempt's request."""
        response = await self._call(
            "POST", _run(run, "approvals"), body, patience_s=REPORT_PATIENCE_S
        )
        return cast(ApprovalBody, _json(response))

    async def wait_approval(self, run: str, approval_id: str, wait_s: float) -> ApprovalBody:
        """The approval once decided, or still pending after `wait_s` (0 to 30 s)."""
        wait = max(0, min(MAX_WAIT_S, round(wait_s)))
        path = f"{_run(run, 'approvals')}/{quote(approval_id, safe='')}?waitSeconds={wait}"
        response = await self._call("GET", path, None, timeout_s=self._timeout_s + wait)
        return cast(ApprovalBody, _json(response))

    async def report_divergence(self, run: str, body: JSON) -> None:
        """A replayed step was called otherwise than its origin recorded it."""
        await self._call("POST", _run(run, "divergences"), body, patience_s=REPORT_PATIENCE_S)

    async def close(self) -> None:
        await self._pool.close()
        await self.models.close()

    async def _call(
        self,
        method: str,
        path: str,
        body: JSON,
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
        patience_s: float | None = None,
    ) -> Response:
        data = b"" if method == "GET" else json.dumps(body, separators=(",", ":")).encode()
        attempts = retries or self._retries
        give_up_at = time.monotonic() + patience_s if patience_s else None
        attempt = 0
        while True:
            attempt += 1
            if give_up_at is not None:
                attempts = attempt + 1 if time.monotonic() < give_up_at else attempt
            delay_s = min(5.0, 0.2 * 2 ** (attempt - 1))
            try:
                response = await self._pool.request(
                    method, PREFIX + path, data, self._headers, timeout_s or self._timeout_s
                )
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                if attempt == attempts:
                    raise GatewayError(0, "UNAVAILABLE", f"{path}: {exc!r}") from exc
                log.warning("agent gateway %s: %r; retrying in %.1fs", path, exc, delay_s)
            else:
                if response.status < 400:
                    return response
                error = _problem(response)
                if (response.status != 429 and response.status < 500) or attempt == attempts:
                    raise error
                delay_s = _retry_after(response, delay_s)
                log.warning("agent gateway %s: %s; retrying in %.1fs", path, error, delay_s)
            await asyncio.sleep(delay_s)


def _run(run: str, action: str) -> str:
    return f"/runs/{quote(run, safe='')}/{action}"


def _json(response: Response) -> Any:
    return json.loads(response.body) if response.body else {}


def _problem(response: Response) -> GatewayError:
    """The RFC 9457 problem in `response` as the matching exception."""
    try:
        problem = json.loads(response.body) if response.body else {}
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    code = str(problem.get("code") or f"HTTP_{response.status}")
    detail = str(problem.get("detail") or problem.get("title") or response.body[:200].decode())
    if response.status == 401:
        return AuthenticationError(response.status, code, detail)
    if response.status == 409 and code == "RUN_FINISHED":
        return RunFinishedError(response.status, code, detail)
    return GatewayError(response.status, code, detail)


def _retry_after(response: Response, default_s: float) -> float:
    try:
        return min(30.0, max(0.0, float(response.headers.get("retry-after", ""))))
    except ValueError:
        return default_s

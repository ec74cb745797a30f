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
from typing import Any, cast
from urllib.parse import quote

from agentos_sdk._core.config import Settings
from agentos_sdk._core.errors import AuthenticationError, GatewayError, RunFinishedError
from agentos_sdk._core.http import ConnectionPool, Response
from agentos_sdk._core.protocol import JSON, Delivery, ErrorBody, HeartbeatReply, StepReport

PREFIX = "/gateway/v1"
USER_AGENT = "agentos-sdk-python/0.1.0"
MAX_WAIT_S = 30
log = logging.getLogger("agentos_sdk")


class GatewayClient:
    """Speaks the run protocol (v1) to `settings.gateway_url` with the agent's token.

    `retries`: attempts per request on transport errors, 429 and 5xx (≥ 1);
    `timeout_s`: per request, seconds (a long poll adds its own wait).
    """

    def __init__(self, settings: Settings, *, retries: int = 5, timeout_s: float = 15.0) -> None:
        self._pool = ConnectionPool(settings.gateway_url, max_idle=settings.concurrency * 2 + 2)
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

    async def heartbeat(self, run: str) -> HeartbeatReply:
        """Keep the run's delivery alive. Raises RunFinishedError when the run is terminal."""
        return cast(HeartbeatReply, _json(await self._call("POST", _run(run, "heartbeat"), {})))

    async def record_step(self, run: str, step: StepReport) -> None:
        """Record one finished step; idempotent by its callId."""
        await self._call("POST", _run(run, "steps"), cast(JSON, step))

    async def checkpoint(self, run: str, state: JSON, call_id: str | None) -> None:
        """Save `state` as the run's last checkpoint (after step `call_id`)."""
        await self._call("POST", _run(run, "checkpoint"), {"state": state, "callId": call_id})

    async def report_output(self, run: str, output: JSON) -> None:
        """The run succeeded with `output`. Raises RunFinishedError if it had already ended."""
        await self._call("POST", _run(run, "result"), {"output": output})

    async def report_error(self, run: str, error: ErrorBody) -> None:
        """The run failed with `error`. Raises RunFinishedError if it had already ended."""
        await self._call("POST", _run(run, "result"), {"error": cast(JSON, error)})

    async def release(self, run: str) -> None:
        """Give the delivery back at once (the agent stops): redelivered with attempt + 1."""
        await self._call("POST", _run(run, "release"), {}, retries=1)

    async def close(self) -> None:
        await self._pool.close()

    async def _call(
        self,
        method: str,
        path: str,
        body: JSON,
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> Response:
        data = json.dumps(body, separators=(",", ":")).encode()
        attempts = retries or self._retries
        for attempt in range(1, attempts + 1):
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
        raise AssertionError("unreachable")  # pragma: no cover


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

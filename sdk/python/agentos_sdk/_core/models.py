"""Model calls through the agent gateway's OpenAI-compatible proxy (`/v1/chat/completions`,
`/v1/embeddings`; architecture/model-gateway.md in the Agent OS repository).

The gateway holds the provider's credential and meters the call as an `llm` step of the
run named in `AgentOS-Run`; the sandbox only ever holds its own AGENTOS_AGENT_TOKEN. Any
OpenAI client works the same way:

    client = openai.OpenAI(base_url=os.environ["AGENTOS_GATEWAY_URL"] + "/v1",
                           api_key=os.environ["AGENTOS_AGENT_TOKEN"],
                           default_headers={"AgentOS-Run": run.name})

Errors: 429 (rate limit or token budget) raises ModelRateLimited with `retry_after_s`; any
other error status raises GatewayError (`status`, `code`, `detail`). Not retried here: a
model call is not idempotent in cost.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from agentos_sdk._core.errors import GatewayError
from agentos_sdk._core.http import ConnectionPool, Response

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"


class ModelRateLimited(GatewayError):
    """429 from the model proxy: the tenant's rate limit (`RATE_LIMITED`) or token budget
    (`BUDGET_EXHAUSTED`) on the provider. `retry_after_s`: seconds until it may succeed
    (the `Retry-After` header, RFC 9110 §10.2.3)."""

    def __init__(self, status: int, code: str, detail: str, retry_after_s: float) -> None:
        super().__init__(status, code, detail)
        self.retry_after_s = retry_after_s


def _error(status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
    try:
        problem = json.loads(body) if body else {}
    except ValueError:
        problem = {}
    problem = problem if isinstance(problem, dict) else {}
    found = problem.get("error")
    upstream: dict[str, Any] = found if isinstance(found, dict) else {}
    code = str(problem.get("code") or upstream.get("code") or f"HTTP_{status}")
    detail = str(
        problem.get("detail") or upstream.get("message") or body[:200].decode(errors="replace")
    )
    if status == 429:
        try:
            retry = float(headers.get("retry-after", "1"))
        except ValueError:
            retry = 1.0
        return ModelRateLimited(status, code, detail, retry)
    return GatewayError(status, code, detail)


class ModelClient:
    """POSTs to the proxy with the agent's token; `timeout_s` per call (a model may be slow)."""

    def __init__(self, gateway_url: str, token: str, *, timeout_s: float = 300.0) -> None:
        self._url = gateway_url.rstrip("/")
        self._pool = ConnectionPool(self._url, max_idle=8)
        self._auth = f"Bearer {token}"
        self._timeout_s = timeout_s

    def _headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        return {
            "Authorization": self._auth,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **extra,
        }

    async def close(self) -> None:
        """Close the idle connections."""
        await self._pool.close()

    async def call(self, path: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> Any:
        """The JSON answer of one call. Raises ModelRateLimited, GatewayError."""
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            response: Response = await self._pool.request(
                "POST", path, data, self._headers(headers), self._timeout_s
            )
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            raise GatewayError(0, "UNAVAILABLE", f"{path}: {exc!r}") from exc
        if response.status >= 400:
            raise _error(response.status, response.headers, response.body)
        return json.loads(response.body)

    async def stream(
        self, path: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        """The chunks of a streamed chat completion as they arrive (the `data:` events up
        to `[DONE]`). Raises ModelRateLimited, GatewayError. One connection per stream."""
        parts = urlsplit(self._url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        context = ssl.create_default_context() if tls else None
        data = json.dumps(body, separators=(",", ":")).encode()
        reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=context)
        try:
            lines = [f"POST {parts.path.rstrip('/')}{path} HTTP/1.1", f"Host: {parts.netloc}"]
            lines += [f"{k}: {v}" for k, v in self._headers(headers).items()]
            lines += [f"Content-Length: {len(data)}", "Connection: close"]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)
            await writer.drain()
            status, response_headers = await _head(reader)
            if status >= 400:
                raise _error(status, response_headers, await _body(reader, response_headers))
            chunked = "chunked" in response_headers.get("transfer-encoding", "")
            async for event in _events(_raw(reader, chunked)):
                yield event
        finally:
            writer.close()


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    status = int(status_line.decode("latin-1").split(" ", 2)[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    chunks = [c async for c in _raw(reader, "chunked" in headers.get("transfer-encoding", ""))]
    return b"".join(chunks)


async def _raw(reader: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    if not chunked:
        while data := await reader.read(65536):
            yield data
        return
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)


async def _events(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return
            event = json.loads(payload)
            if isinstance(event, dict):
                yield event

"""A TEST DOUBLE of an outside SaaS: an OpenAI-compatible model provider (not OpenAI).

A small real HTTP/1.1 server (asyncio, keep-alive) on a free port, started by the test
in a thread of its own, or as a process (`python -m tests.doubles.openai_upstream
--credential KEY`, which prints its port),  speaking the OpenAI wire
format for `POST /v1/chat/completions` (a completion, or with `stream: true` Server-Sent
Events chunks, a final usage chunk when `stream_options.include_usage` is asked, then
`data: [DONE]`) and `POST /v1/embeddings`. It answers 401 unless `Authorization` is
`Bearer <the credential it was given>`, and records every request it received
(`received`: path, headers, JSON body).

Token counts are fixed and known to the test: `PROMPT_TOKENS`, `COMPLETION_TOKENS`,
`CACHED_TOKENS`; the reply's content is `REPLY` split into `len(REPLY_PARTS)` chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

PROMPT_TOKENS = 17
COMPLETION_TOKENS = 5
CACHED_TOKENS = 4
EMBEDDING_TOKENS = 3
REPLY_PARTS = ["Hello", " from", " the", " double", "."]
REPLY = "".join(REPLY_PARTS)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class _State:
    credential: str
    chunk_delay_s: float
    received: list[Received] = field(default_factory=list)
    record: bool = True


def _usage() -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _error(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def _json(status: int, body: Any) -> bytes:
    data = json.dumps(body).encode()
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}[status]
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": REPLY}
    return {
        "id": "chatcmpl-double",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": _usage(),
    }


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input")
    count = len(inputs) if isinstance(inputs, list) else 1
    vectors = [
        {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)
    ]
    return {
        "object": "list",
        "model": body.get("model"),
        "data": vectors,
        "usage": {"prompt_tokens": EMBEDDING_TOKENS, "total_tokens": EMBEDDING_TOKENS},
    }


def _chunk(payload: str) -> bytes:
    data = f"data: {payload}\n\n".encode()
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _stream(state: _State, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    base = {
        "id": "chatcmpl-double",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model"),
    }
    for i, part in enumerate(REPLY_PARTS):
        delta: dict[str, Any] = {"content": part}
        if i == 0:
            delta["role"] = "assistant"
        last = i == len(REPLY_PARTS) - 1
        choice = {"index": 0, "delta": delta, "finish_reason": "stop" if last else None}
        writer.write(_chunk(json.dumps({**base, "choices": [choice], "usage": None})))
        await writer.drain()
        await asyncio.sleep(state.chunk_delay_s)
    if (body.get("stream_options") or {}).get("include_usage"):
        writer.write(_chunk(json.dumps({**base, "choices": [], "usage": _usage()})))
    writer.write(_chunk("[DONE]") + b"0\r\n\r\n")
    await writer.drain()


async def _answer(
    state: _State, writer: asyncio.StreamWriter, path: str, headers: dict[str, str], raw: bytes
) -> None:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if state.record:
        state.received.append(Received(path, headers, body))
    if headers.get("authorization") != f"Bearer {state.credential}":
        writer.write(_json(401, _error("Incorrect API key", "invalid_api_key")))
    elif not isinstance(body, dict):
        writer.write(_json(400, _error("body is not JSON")))
    elif path == "/v1/embeddings":
        writer.write(_json(200, _embeddings(body)))
    elif path == "/v1/chat/completions" and body.get("stream"):
        await _stream(state, writer, body)
    elif path == "/v1/chat/completions":
        writer.write(_json(200, _completion(body)))
    else:
        writer.write(_json(404, _error(f"no route {path}")))
    await writer.drain()


async def _serve_connection(
    state: _State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while request_line := await reader.readline():
            _, path, _ = request_line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length") or 0))
            await _answer(state, writer, path, headers, raw)
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


class OpenAIUpstreamDouble:
    """`with OpenAIUpstreamDouble("sk-test-...") as upstream:` serving on
    `upstream.base_url` (`http://127.0.0.1:<port>/v1`) from a thread with its own event
    loop; `received` lists what came (headers lower-cased). `record=False` keeps nothing."""

    def __init__(
        self, credential: str, *, chunk_delay_s: float = 0.01, record: bool = True, port: int = 0
    ) -> None:
        self._state = _State(credential, chunk_delay_s, record=record)
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(
                lambda r, w: _serve_connection(self._state, r, w), "127.0.0.1", port
            )
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def received(self) -> list[Received]:
        return list(self._state.received)

    def __enter__(self) -> OpenAIUpstreamDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def main() -> None:
    """Serve as a process until killed; print the port on stdout first."""
    parser = argparse.ArgumentParser(description="test double of an OpenAI-compatible provider")
    parser.add_argument("--credential", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    async def serve() -> None:
        state = _State(args.credential, 0.01, record=False)
        server = await asyncio.start_server(
            lambda r, w: _serve_connection(state, r, w), "127.0.0.1", args.port
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        sys.stdout.close()
        await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()

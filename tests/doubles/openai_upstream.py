"""A TEST DOUBLE of an outside SaaS: an OpenAI-compatible model provider (not OpenAI).

A small real HTTP/1.1 server on a free port, started by the test, speaking the OpenAI wire
format for `POST /v1/chat/completions` (a completion, or with `stream: true` Server-Sent
Events chunks, a final usage chunk when `stream_options.include_usage` is asked, then
`data: [DONE]`) and `POST /v1/embeddings`. It answers 401 unless `Authorization` is
`Bearer <the credential it was given>`, and records every request it received
(`received`: path, headers, JSON body).

Token counts are fixed and known to the test: `PROMPT_TOKENS`, `COMPLETION_TOKENS`,
`CACHED_TOKENS`; the reply's content is `REPLY` split into `len(REPLY_PARTS)` chunks.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    lock: threading.Lock = field(default_factory=threading.Lock)
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if state.record:
            with state.lock:
                state.received.append(Received(self.path, dict(self.headers.items()), body))
        if self.headers.get("Authorization") != f"Bearer {state.credential}":
            self._send(401, _error("Incorrect API key", "invalid_api_key"))
            return
        if not isinstance(body, dict):
            self._send(400, _error("body is not JSON"))
            return
        if self.path == "/v1/embeddings":
            inputs = body.get("input")
            count = len(inputs) if isinstance(inputs, list) else 1
            self._send(200, {
                "object": "list", "model": body.get("model"),
                "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)],  # noqa: E501
                "usage": {"prompt_tokens": EMBEDDING_TOKENS, "total_tokens": EMBEDDING_TOKENS},
            })  # fmt: skip
        elif self.path == "/v1/chat/completions":
            if body.get("stream"):
                self._stream(body)
            else:
                self._send(200, {
                    "id": "chatcmpl-double", "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],  # noqa: E501
                    "usage": _usage(),
                })  # fmt: skip
        else:
            self._send(404, _error(f"no route {self.path}"))

    def _chunk(self, payload: str) -> None:
        data = f"data: {payload}\n\n".encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _stream(self, body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {
            "id": "chatcmpl-double",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model"),
        }
        for i, part in enumerate(REPLY_PARTS):
            delta: dict[str, Any] = (
                {"content": part} if i else {"role": "assistant", "content": part}
            )
            last = i == len(REPLY_PARTS) - 1
            choice = {"index": 0, "delta": delta, "finish_reason": "stop" if last else None}
            self._chunk(json.dumps({**base, "choices": [choice], "usage": None}))
            time.sleep(self.server.state.chunk_delay_s)
        if (body.get("stream_options") or {}).get("include_usage"):
            self._chunk(json.dumps({**base, "choices": [], "usage": _usage()}))
        self._chunk("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class OpenAIUpstreamDouble:
    """`with OpenAIUpstreamDouble("sk-test-...") as upstream:` serving on
    `upstream.base_url` (`http://127.0.0.1:<port>/v1`); `received` lists what came.
    `record=False` keeps nothing (a benchmark)."""

    def __init__(
        self, credential: str, *, chunk_delay_s: float = 0.01, record: bool = True
    ) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(credential, chunk_delay_s, record=record)
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def received(self) -> list[Received]:
        with self._server.state.lock:
            return list(self._server.state.received)

    def __enter__(self) -> OpenAIUpstreamDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

"""Reading an OpenAI chat completion stream as it passes through the proxy: Server-Sent
Events (the WHATWG HTML standard, "Server-sent events") whose `data:` lines are chunks
(`object: chat.completion.chunk`), ended by `data: [DONE]`. With
`stream_options.include_usage` the last chunk before `[DONE]` has empty `choices` and the
call's `usage` (the OpenAI API reference)."""

from __future__ import annotations

import json
import time
from typing import Any

from controlplane.domain.providers.metering import usage_of
from controlplane.domain.runs.model import Usage


class StreamTap:
    """Fed the stream's bytes as they pass (`feed`), keeps what metering needs: the time to
    the first content (ms since `started_s`, a `time.perf_counter()` reading), the usage
    chunk, and the assembled completion (the content of each choice)."""

    def __init__(self, started_s: float) -> None:
        self._started_s = started_s
        self._buffer = b""
        self.first_token_ms: float | None = None
        self.usage: Usage | None = None
        self._meta: dict[str, Any] = {}
        self._content: dict[int, list[str]] = {}
        self._finish: dict[int, str | None] = {}

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the stream (any split: lines are reassembled)."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            line = line.strip()
            if line.startswith(b"data:"):
                self._event(line[5:].strip())

    def _event(self, data: bytes) -> None:
        if not data or data == b"[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            return
        if not isinstance(chunk, dict):
            return
        for key in ("id", "model", "created", "system_fingerprint"):
            if key in chunk and key not in self._meta:
                self._meta[key] = chunk[key]
        usage = usage_of(chunk)
        if usage is not None:
            self.usage = usage
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict):
                self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        index = index if isinstance(index, int) else 0
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(text, str) and text:
            if self.first_token_ms is None:
                self.first_token_ms = round((time.perf_counter() - self._started_s) * 1000, 3)
            self._content.setdefault(index, []).append(text)
        if choice.get("finish_reason") is not None:
            self._finish[index] = choice["finish_reason"]

    def completion(self) -> dict[str, Any]:
        """The stream as one `chat.completion` (what a non-streaming call would answer,
        content only: tool-call deltas are not assembled)."""
        indices = sorted(set(self._content) | set(self._finish))
        return {
            **self._meta,
            "object": "chat.completion",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": "".join(self._content.get(i, []))},
                    "finish_reason": self._finish.get(i),
                }
                for i in indices
            ],
            "usage": (
                {
                    "prompt_tokens": self.usage.inputTokens,
                    "completion_tokens": self.usage.outputTokens,
                    "total_tokens": self.usage.inputTokens + self.usage.outputTokens,
                    "prompt_tokens_details": {"cached_tokens": self.usage.cachedInputTokens},
                }
                if self.usage
                else None
            ),
        }

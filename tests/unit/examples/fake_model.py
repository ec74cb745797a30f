"""FakeModelProvider: a test double of an OpenAI-compatible chat completions endpoint.

aiohttp on a loopback port. `POST /v1/chat/completions` answers the next of a script of
assistant messages (a tool call, then a final answer, ...), each with `usage`, and keeps
every request and its Authorization header for the test to read.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def tool_call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    """An assistant message asking for one tool call."""
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": function}],
    }


def answer(text: str) -> dict[str, Any]:
    """A final assistant message."""
    return {"role": "assistant", "content": text}


class FakeModelProvider:
    """`await start()` → the base URL (`.../v1`); answers `script` in order, then 500s."""

    def __init__(self, script: list[dict[str, Any]], *, prompt_tokens: int = 40) -> None:
        self.script = list(script)
        self.prompt_tokens = prompt_tokens
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self.url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def usage_of(self, turn: int) -> dict[str, int]:
        """The usage the provider answers on `turn` (0-based)."""
        return {
            "prompt_tokens": self.prompt_tokens + 10 * turn,
            "completion_tokens": 5 + turn,
            "total_tokens": self.prompt_tokens + 10 * turn + 5 + turn,
        }

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        turn = len(self.requests)
        self.requests.append(body)
        self.authorizations.append(request.headers.get("Authorization"))
        if turn >= len(self.script):
            return web.json_response({"error": {"message": "script exhausted"}}, status=500)
        message = self.script[turn]
        return web.json_response(
            {
                "id": f"chatcmpl-{turn}",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                    }
                ],
                "usage": self.usage_of(turn),
            }
        )

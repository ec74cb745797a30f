"""A test agent on the SDK that calls models through the agent gateway's model proxy
(tests/e2e/test_model_proxy.py). It never holds a provider's credential: only its own
AGENTOS_AGENT_TOKEN.

Run input: {"mode": "chat" | "stream" | "embeddings" | "sleep", "model": str,
            "times": N?, "seconds": S?}
- chat: `times` (1) calls of run.chat; answers the last content and usage;
- stream: run.chat_stream; answers the joined content, the chunk count and the last usage;
- embeddings: run.embeddings; answers the number of vectors and the usage;
- sleep: holds the run Running for `seconds`.
A ModelRateLimited is written to $COUNT_DIR/<run>.limited ({"code", "retryAfter"}) and
re-raised: the run fails with it. $COUNT_DIR/<run>.env gets the agent's environment.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from agentos_sdk import Agent, ModelRateLimited, Run

COUNTS = Path(os.environ["COUNT_DIR"])
agent = Agent(heartbeat_file_seconds=0.2)
MESSAGES = [{"role": "user", "content": "Say hello."}]


@agent.run
async def handle(run: Run) -> Any:
    spec = run.input if isinstance(run.input, dict) else {}
    (COUNTS / f"{run.name}.env").write_text(json.dumps(dict(os.environ)))
    mode, model = spec.get("mode", "chat"), spec.get("model", "double-chat")
    try:
        if mode == "chat":
            reply: dict[str, Any] = {}
            for _ in range(int(spec.get("times", 1))):
                reply = await run.chat(model=model, messages=MESSAGES, temperature=0)
            return {"content": reply["choices"][0]["message"]["content"], "usage": reply["usage"]}
        if mode == "stream":
            chunks = [c async for c in run.chat_stream(model=model, messages=MESSAGES)]
            content = "".join(
                (choice.get("delta") or {}).get("content") or ""
                for c in chunks
                for choice in c.get("choices") or []
            )
            return {"content": content, "chunks": len(chunks), "usage": chunks[-1].get("usage")}
        if mode == "embeddings":
            answer = await run.embeddings(model=model, input=["a", "b"])
            return {"vectors": len(answer["data"]), "usage": answer["usage"]}
        await asyncio.sleep(float(spec.get("seconds", 30)))
        return {"slept": True}
    except ModelRateLimited as exc:
        limited = {"code": exc.code, "retryAfter": exc.retry_after_s, "status": exc.status}
        (COUNTS / f"{run.name}.limited").write_text(json.dumps(limited))
        raise


if __name__ == "__main__":
    agent.serve()

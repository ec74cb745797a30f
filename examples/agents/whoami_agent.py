"""An example agent that answers each run with who it is: its `spec.config["who"]`, its
`AGENT_LABEL` variable and whether it started in a warm sandbox (architecture/warm-pools.md).

Every value comes from what the control plane gave this agent: the config file
(`AGENTOS_CONFIG_FILE`), the environment and, for a warm sandbox, the handoff that bound it
to this agent (`/agentos/handoff.taken`). Serve it with `python3 /agent/whoami_agent.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from agentos_sdk import Agent, Run

agent = Agent()


@agent.run
async def handle(run: Run) -> dict[str, Any]:
    config_file = Path(os.environ["AGENTOS_CONFIG_FILE"])
    config = json.loads(await asyncio.to_thread(config_file.read_text) or "{}")
    return {
        "who": config.get("who"),
        "label": os.environ.get("AGENT_LABEL"),
        "warm": (config_file.parent / "handoff.taken").exists(),
        "warmVariables": sorted(k for k in os.environ if k.startswith("AGENTOS_WARM_")),
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    agent.serve()

"""Agent OS's in-sandbox SDK: take runs, journal their steps, checkpoint, report results.

    from agentos_sdk import Agent, Run

    agent = Agent()                      # AGENTOS_GATEWAY_URL, AGENTOS_AGENT_TOKEN, ...

    @agent.tool
    def add(a: float, b: float) -> float:
        return a + b

    @agent.run
    async def handle(run: Run) -> dict:
        total = await run.call_tool(add, a=2, b=3)   # a journaled `tool` step
        return {"total": total}

    agent.serve()                        # until SIGTERM

The protocol it speaks: architecture/gateway-protocol.md in the Agent OS repository.
"""

from agentos_sdk._core.agent import Agent
from agentos_sdk._core.approvals import Decision
from agentos_sdk._core.errors import (
    AgentOSError,
    ApprovalRejected,
    AuthenticationError,
    ConfigError,
    GatewayError,
    NonDeterminismError,
    RunFinishedError,
    StepFailed,
)
from agentos_sdk._core.models import ModelRateLimited
from agentos_sdk._core.protocol import JSON
from agentos_sdk._core.run import Run
from agentos_sdk._core.tools import Tool
from agentos_sdk._core.usage import Usage

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "Agent",
    "AgentOSError",
    "ApprovalRejected",
    "AuthenticationError",
    "ConfigError",
    "Decision",
    "GatewayError",
    "ModelRateLimited",
    "NonDeterminismError",
    "Run",
    "RunFinishedError",
    "StepFailed",
    "Tool",
    "Usage",
]

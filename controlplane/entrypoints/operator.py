"""The Kubernetes operator process (`agentos operator`)."""

from __future__ import annotations

import asyncio

from controlplane.config import Settings
from controlplane.observability.logging import configure_logging


def main(settings: Settings) -> int:
    """Run the operator (operators/agent) until leadership is lost or a signal; returns the
    process's exit code (1 when the Lease was lost)."""
    from operators.agent.operator import run_operator

    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(run_operator(settings))

"""The gateway's answers in the protocol's shapes (architecture/gateway-protocol.md)."""

from __future__ import annotations

from typing import Any

from controlplane.domain.events.envelope import rfc3339
from controlplane.service.run_execution import Claim


def claim_view(
    claim: Claim, traceparent: str | None = None, approval: str = "none"
) -> dict[str, Any]:
    """`{"run": Run, "journal": Journal}` of a claimed delivery (`traceparent`: the W3C
    trace context the dispatch message carried; `approval`: the agent's
    `spec.runs.approval`, which tool calls the SDK asks a human about)."""
    run = claim.run
    checkpoint = (
        {"state": claim.checkpoint.state, "callId": None} if claim.checkpoint is not None else None
    )
    return {
        "run": {
            "name": run.name,
            "agent": run.agent,
            "tenant": run.tenant,
            "attempt": run.status.attempt,
            "input": run.spec.input,
            "timeoutSeconds": run.spec.timeoutSeconds,
            "deadline": rfc3339(run.deadline),
            "labels": run.labels,
            "traceparent": traceparent,
            "approval": approval,
        },
        "journal": {
            "steps": [
                {
                    "callId": s.callId,
                    "type": s.type,
                    "name": s.name,
                    "status": s.status,
                    "input": s.input,
                    "output": s.output,
                    "error": s.error.model_dump() if s.error else None,
                    "replayed": s.callId in claim.replayed,
                }
                for s in claim.journal
            ],
            "checkpoint": checkpoint,
        },
    }

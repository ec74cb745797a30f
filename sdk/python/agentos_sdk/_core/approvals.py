"""Asking a human: `Decision`, and the wait for one (architecture/gateway-protocol.md,
"Approvals").

The request is idempotent by the step's callId, so a later attempt of the run (after a
crash, a redelivery) that reaches the same step gets the same approval — decided already,
or still pending — and never asks twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from agentos_sdk._core.errors import AuthenticationError, GatewayError, RunFinishedError
from agentos_sdk._core.gateway import GatewayClient
from agentos_sdk._core.protocol import JSON, ApprovalBody

WAIT_S = 20.0  # one long poll for the decision
log = logging.getLogger("agentos_sdk")


@dataclass(frozen=True)
class Decision:
    """A human's answer to `run.request_approval`.

    `approved` is True only for `state == "approved"` (`"rejected"` and `"expired"` are
    refusals); `arguments` are the details asked about with the decider's `edits` laid over
    them — what to go on with; `comment` and `decided_by` (a principal, `system:expiry`
    for an expiry) are for the record.
    """

    approval_id: str
    action: str
    state: str
    arguments: dict[str, JSON] = field(default_factory=dict)
    edits: dict[str, JSON] | None = None
    comment: str = ""
    decided_by: str | None = None

    @property
    def approved(self) -> bool:
        return self.state == "approved"

    @classmethod
    def of(cls, body: ApprovalBody) -> Decision:
        return cls(
            approval_id=body["id"],
            action=body["action"],
            state=body["state"],
            arguments=dict(body.get("arguments") or body.get("details") or {}),
            edits=body.get("edits"),
            comment=body.get("comment") or "",
            decided_by=body.get("decidedBy"),
        )


async def ask(
    gateway: GatewayClient,
    run: str,
    attempt: int,
    call_id: str,
    action: str,
    details: dict[str, JSON],
    timeout_s: float | None,
) -> Decision:
    """Ask for approval of step `call_id` and wait, however long, for the decision.

    The wait outlives a control plane restart (it is retried until the run's heartbeat
    says the run ended, which cancels the handler). Raises RunFinishedError,
    AuthenticationError, GatewayError for a request the gateway refuses (4xx).
    """
    body: dict[str, JSON] = {
        "callId": call_id,
        "action": action,
        "details": details,
        "attempt": attempt,
    }
    if timeout_s is not None:
        body["timeoutSeconds"] = max(1, round(timeout_s))
    approval = await gateway.request_approval(run, body)
    backoff_s = 0.5
    while approval["state"] == "pending":
        try:
            approval = await gateway.wait_approval(run, approval["id"], WAIT_S)
            backoff_s = 0.5
        except (AuthenticationError, RunFinishedError):
            raise
        except GatewayError as exc:
            if exc.status and exc.status < 500 and exc.status != 429:
                raise
            log.warning(
                "waiting for approval %s: %s; again in %.1fs", approval["id"], exc, backoff_s
            )
            await asyncio.sleep(backoff_s)
            backoff_s = min(10.0, backoff_s * 2)
    return Decision.of(approval)

"""The SDK's exceptions: one base class, one class per thing an agent author may catch."""

from __future__ import annotations


class AgentOSError(Exception):
    """Base class of every error the SDK raises on purpose."""


class ConfigError(AgentOSError):
    """A setting is missing or malformed; the message names the environment variable."""


class GatewayError(AgentOSError):
    """The agent gateway answered with an error (RFC 9457 problem+json).

    Attributes: `status` (HTTP status, 0 when the gateway could not be reached), `code`
    (the problem's stable `code`, e.g. `RUN_NOT_FOUND`), `detail` (its human message).
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"agent gateway: {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class AuthenticationError(GatewayError):
    """401 from the gateway: `AGENTOS_AGENT_TOKEN` is missing, wrong or revoked."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(status, code, detail)
        self.args = (
            f"the agent gateway refused AGENTOS_AGENT_TOKEN ({status} {code}: {detail}); "
            "the token is wrong or was revoked with its sandbox",
        )


class RunFinishedError(GatewayError):
    """409 `RUN_FINISHED`: the run is already terminal; nothing more is recorded for it."""


class StepFailed(AgentOSError):
    """A journaled step failed: now, or in an earlier attempt (then re-raised from the journal).

    Attributes: `name` and `call_id` of the step, `error_type` (the class name of the
    original exception, e.g. `"ZeroDivisionError"`) and `message` (its text). On a fresh
    failure the original exception is chained as `__cause__`.
    """

    def __init__(self, name: str, call_id: str, error_type: str, message: str) -> None:
        super().__init__(f"step {name!r} (callId {call_id}) failed: {error_type}: {message}")
        self.name = name
        self.call_id = call_id
        self.error_type = error_type
        self.message = message


class NonDeterminismError(AgentOSError):
    """The handler diverged from its journal: the step at a recorded callId has another
    name or type than the one recorded by an earlier attempt. The run fails with it."""


class ApprovalRejected(AgentOSError):
    """A human rejected the action, or its approval expired (an expiry is a rejection).

    Attributes: `action` (the tool, or the action asked about), `approval_id`, `state`
    (`"rejected"` or `"expired"`), `comment` (the decider's), `decided_by` (the principal;
    `system:expiry` for an expiry). Raised by `run.call_tool` for a tool the agent's
    `spec.runs.approval` gates; `run.request_approval` returns the decision instead.
    """

    def __init__(
        self, action: str, approval_id: str, state: str, comment: str, decided_by: str | None
    ) -> None:
        reason = f": {comment}" if comment else ""
        super().__init__(f"{action!r} was {state} by {decided_by or 'nobody'}{reason}")
        self.action = action
        self.approval_id = approval_id
        self.state = state
        self.comment = comment
        self.decided_by = decided_by

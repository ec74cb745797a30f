"""Errors, each with a stable code from the one catalogue (architecture/api-compatibility.md).

The API maps a code to an HTTP status and a google.rpc code (controlplane/api/errors.py,
`CATALOGUE`); the domain and the service layer only name it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One invalid field: `pointer` is an RFC 6901 JSON pointer into the submitted object."""

    pointer: str
    message: str


class AgentOSError(Exception):
    """Base of every error Agent OS raises on purpose. `code` is stable and documented."""

    code = "INTERNAL"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class ValidationFailed(AgentOSError):
    """Input does not satisfy its schema; `errors` names each field by JSON pointer."""

    code = "VALIDATION_FAILED"


class EventSchemaViolation(ValidationFailed):
    """An event payload does not satisfy the JSON Schema registered for its type and version."""

    code = "EVENT_SCHEMA_VIOLATION"


class UnknownEventType(AgentOSError):
    """No schema is registered for an event type and version."""

    code = "EVENT_TYPE_UNKNOWN"


class IncompatibleSchema(AgentOSError):
    """A schema change would break consumers of an already registered event type."""

    code = "EVENT_SCHEMA_INCOMPATIBLE"


class NotFound(AgentOSError):
    """The named object does not exist (or is not visible to the caller)."""

    code = "NOT_FOUND"


class AgentNotFound(NotFound):
    """No agent of that name in the tenant (or not visible to the caller)."""

    code = "AGENT_NOT_FOUND"


class TenantNotFound(NotFound):
    """No such tenant (or not visible to the caller)."""

    code = "TENANT_NOT_FOUND"


class RunNotFound(NotFound):
    """No run of that name for the agent in the tenant (or not visible to the caller)."""

    code = "RUN_NOT_FOUND"


class ApprovalNotFound(NotFound):
    """No approval of that id on the run (or not visible to the caller)."""

    code = "APPROVAL_NOT_FOUND"


class AgentBusy(AgentOSError):
    """The agent's `spec.runs.queue` is `reject` and every slot is busy, or its queue already
    holds `maxQueued` runs: the run is refused at admission and nothing is written."""

    code = "AGENT_BUSY"


class RunFinished(AgentOSError):
    """The run already ended (Succeeded, Failed, Canceled, TimedOut): it cannot be cancelled
    or changed any more."""

    code = "RUN_FINISHED"


class ApprovalDecided(AgentOSError):
    """The approval was already approved, rejected or expired: a decision is final."""

    code = "APPROVAL_DECIDED"


class ApprovalRequired(AgentOSError):
    """A tool step the agent's `spec.runs.approval` gates was reported without the id of an
    approved approval for that step and those arguments: it is not recorded."""

    code = "APPROVAL_REQUIRED"


class AlreadyExists(AgentOSError):
    """An object with that name already exists."""

    code = "ALREADY_EXISTS"


class Conflict(AgentOSError):
    """A write lost an optimistic-concurrency race (stale resourceVersion)."""

    code = "CONFLICT"


class Unauthenticated(AgentOSError):
    """No bearer token, or one that is unknown, revoked or expired (HTTP 401)."""

    code = "UNAUTHENTICATED"


class PermissionDenied(AgentOSError):
    """The caller sees the object but its role does not allow the action (HTTP 403)."""

    code = "PERMISSION_DENIED"


class RateLimited(AgentOSError):
    """The caller sent more requests than its rate allows; retry after `retry_after_s`."""

    code = "RATE_LIMITED"

    def __init__(self, detail: str, *, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class TokenNotFound(NotFound):
    """No token with that id (or not visible to the caller)."""

    code = "TOKEN_NOT_FOUND"


class TenantNotEmpty(AgentOSError):
    """A tenant that still has agents cannot be deleted."""

    code = "TENANT_NOT_EMPTY"


class IdempotencyKeyInUse(AgentOSError):
    """A request with the same Idempotency-Key is still being processed (retry later)."""

    code = "IDEMPOTENCY_KEY_IN_USE"


class IdempotencyKeyReused(AgentOSError):
    """The Idempotency-Key was already used with a different request body."""

    code = "IDEMPOTENCY_KEY_REUSED"


class BadRequest(AgentOSError):
    """A request parameter is malformed (e.g. a label selector or a continue token)."""

    code = "BAD_REQUEST"


class ResourceVersionExpired(AgentOSError):
    """A watch asked to resume from a resourceVersion older than what is kept (HTTP 410)."""

    code = "RESOURCE_VERSION_EXPIRED"


class ModelNotFound(NotFound):
    """No model provider of that name in the tenant, or none that serves the requested model."""

    code = "MODEL_NOT_FOUND"


class BudgetExhausted(RateLimited):
    """The tenant spent its token budget on a model provider for the current window; retry
    when the next window opens (`retry_after_s`)."""

    code = "BUDGET_EXHAUSTED"


class RunNotRunning(AgentOSError):
    """A model call could not be attributed to a run: the named run is not Running, or the
    agent has no running run (or several, and the call named none)."""

    code = "RUN_NOT_RUNNING"


class UpstreamUnavailable(AgentOSError):
    """The model provider could not be reached, timed out, or its credential is missing."""

    code = "MODEL_UPSTREAM_UNAVAILABLE"

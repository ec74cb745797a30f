"""Domain errors, each with a stable code from the one catalogue (DESIGN §4).

The API maps a code to an HTTP status and a google.rpc code; the domain only names it.
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


class AlreadyExists(AgentOSError):
    """An object with that name already exists."""

    code = "ALREADY_EXISTS"


class Conflict(AgentOSError):
    """A write lost an optimistic-concurrency race (stale resourceVersion)."""

    code = "CONFLICT"

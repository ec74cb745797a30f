"""JSON-RPC 2.0 envelopes and the A2A error codes (A2A specification v1.0, "Error Handling";
JSON-RPC 2.0 specification, section 5.1).

An A2A error carries a `google.rpc.ErrorInfo` in `data` whose `reason` is our stable error
code (controlplane/api/errors.py), as the official client reads it.
"""

from __future__ import annotations

from typing import Any

from controlplane.domain.errors import AgentOSError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
TASK_NOT_FOUND = -32001
TASK_NOT_CANCELABLE = -32002
PUSH_NOTIFICATION_NOT_SUPPORTED = -32003
UNSUPPORTED_OPERATION = -32004
VERSION_NOT_SUPPORTED = -32009
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
DOMAIN = "agentos.io"

# Our codes that have an A2A counterpart; any other AgentOSError is an internal error.
_A2A_CODES: dict[str, int] = {
    "RUN_NOT_FOUND": TASK_NOT_FOUND,
    "AGENT_NOT_FOUND": TASK_NOT_FOUND,
    "TENANT_NOT_FOUND": TASK_NOT_FOUND,
    "RUN_FINISHED": TASK_NOT_CANCELABLE,
    "ILLEGAL_TRANSITION": TASK_NOT_CANCELABLE,
    "VALIDATION_FAILED": INVALID_PARAMS,
    "BAD_REQUEST": INVALID_PARAMS,
    "IDEMPOTENCY_KEY_REUSED": INVALID_PARAMS,
}


class A2AError(Exception):
    """An error answered as a JSON-RPC error object: `code` (an A2A or JSON-RPC code),
    `message`, and `reason` (our code, in the ErrorInfo of `data`)."""

    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason

    def to_object(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.reason:
            error["data"] = [{"@type": ERROR_INFO, "reason": self.reason, "domain": DOMAIN}]
        return error


def from_agentos(exc: AgentOSError) -> A2AError:
    """The A2A error of one of ours: RUN_NOT_FOUND → TaskNotFound (-32001), RUN_FINISHED →
    TaskNotCancelable (-32002), validation → InvalidParams (-32602), others → InternalError
    (-32603); the reason is always our code."""
    return A2AError(_A2A_CODES.get(exc.code, INTERNAL_ERROR), exc.detail, exc.code)


def result(request_id: Any, value: Any) -> dict[str, Any]:
    """A JSON-RPC success response."""
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def error(request_id: Any, exc: A2AError) -> dict[str, Any]:
    """A JSON-RPC error response."""
    return {"jsonrpc": "2.0", "id": request_id, "error": exc.to_object()}


def parse_request(body: Any) -> tuple[Any, str, dict[str, Any]]:
    """(id, method, params) of a JSON-RPC request object. Raises A2AError InvalidRequest
    (not a request object; batches are not supported) or InvalidParams (params not an
    object: A2A methods take named parameters)."""
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
        raise A2AError(INVALID_REQUEST, "not a JSON-RPC 2.0 request object")
    method = body.get("method")
    if not isinstance(method, str):
        raise A2AError(INVALID_REQUEST, "method: a string")
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise A2AError(INVALID_PARAMS, "params: an object")
    return body.get("id"), method, params

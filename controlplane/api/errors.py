"""One catalogue of error codes, mapped to RFC 9457 problem+json and to google.rpc codes.

Every error Agent OS answers with has a stable `code` from `CATALOGUE`, whether it comes from
the domain (AgentOSError subclasses), from request validation, or from the HTTP layer itself
(unknown route, wrong method). REST renders it as `application/problem+json` (RFC 9457):
`type`, `title`, `status`, `detail`, `instance`, `code`, `trace_id`, and `errors[]` for
validation, each naming its field by JSON pointer (RFC 6901) into the body, or by parameter
name for a query, path or header parameter. gRPC renders the same code as the `reason` of a
`google.rpc.ErrorInfo` inside a `google.rpc.Status` (controlplane/api/grpc/server.py).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from controlplane.domain.agents.lifecycle import IllegalTransition
from controlplane.domain.errors import AgentOSError, RateLimited, Unauthenticated
from controlplane.observability.tracing import current_trace_id

PROBLEM = "application/problem+json"
PROBLEM_TYPE_BASE = "https://agentos.io/problems/"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorSpec:
    """How one code is answered: HTTP status, google.rpc.Code name, and a fixed title."""

    http_status: int
    grpc_code: str
    title: str


CATALOGUE: dict[str, ErrorSpec] = {
    "VALIDATION_FAILED": ErrorSpec(422, "INVALID_ARGUMENT", "The request is not valid"),
    "BAD_REQUEST": ErrorSpec(400, "INVALID_ARGUMENT", "A request parameter is malformed"),
    "EVENT_SCHEMA_VIOLATION": ErrorSpec(
        422, "INVALID_ARGUMENT", "An event payload does not satisfy its schema"
    ),
    "EVENT_TYPE_UNKNOWN": ErrorSpec(500, "INTERNAL", "No schema is registered for the event"),
    "EVENT_SCHEMA_INCOMPATIBLE": ErrorSpec(
        409, "FAILED_PRECONDITION", "The schema change would break consumers"
    ),
    "UNAUTHENTICATED": ErrorSpec(401, "UNAUTHENTICATED", "Authentication required"),
    "PERMISSION_DENIED": ErrorSpec(403, "PERMISSION_DENIED", "Permission denied"),
    "NOT_FOUND": ErrorSpec(404, "NOT_FOUND", "Not found"),
    "AGENT_NOT_FOUND": ErrorSpec(404, "NOT_FOUND", "Agent not found"),
    "TENANT_NOT_FOUND": ErrorSpec(404, "NOT_FOUND", "Tenant not found"),
    "TOKEN_NOT_FOUND": ErrorSpec(404, "NOT_FOUND", "Token not found"),
    "RUN_NOT_FOUND": ErrorSpec(404, "NOT_FOUND", "Run not found"),
    "APPROVAL_NOT_FOUND": ErrorSpec(404, "NOT_FOUND", "Approval not found"),
    "METHOD_NOT_ALLOWED": ErrorSpec(405, "UNIMPLEMENTED", "Method not allowed"),
    "NOT_ACCEPTABLE": ErrorSpec(406, "INVALID_ARGUMENT", "Not acceptable"),
    "UNSUPPORTED_MEDIA_TYPE": ErrorSpec(415, "INVALID_ARGUMENT", "Unsupported media type"),
    "ALREADY_EXISTS": ErrorSpec(409, "ALREADY_EXISTS", "Already exists"),
    "CONFLICT": ErrorSpec(409, "ABORTED", "Conflict"),
    "ILLEGAL_TRANSITION": ErrorSpec(409, "FAILED_PRECONDITION", "Illegal lifecycle transition"),
    "TENANT_NOT_EMPTY": ErrorSpec(409, "FAILED_PRECONDITION", "The tenant still has agents"),
    "AGENT_BUSY": ErrorSpec(409, "RESOURCE_EXHAUSTED", "The agent cannot take another run"),
    "RUN_FINISHED": ErrorSpec(409, "FAILED_PRECONDITION", "The run has already finished"),
    "APPROVAL_DECIDED": ErrorSpec(409, "FAILED_PRECONDITION", "The approval is already decided"),
    "APPROVAL_REQUIRED": ErrorSpec(
        409, "FAILED_PRECONDITION", "The step needs an approved approval"
    ),
    "IDEMPOTENCY_KEY_IN_USE": ErrorSpec(
        409, "ABORTED", "A request with this Idempotency-Key is in progress"
    ),
    "IDEMPOTENCY_KEY_REUSED": ErrorSpec(
        422, "INVALID_ARGUMENT", "The Idempotency-Key was used for another request"
    ),
    "RESOURCE_VERSION_EXPIRED": ErrorSpec(410, "OUT_OF_RANGE", "The resourceVersion is too old"),
    "RATE_LIMITED": ErrorSpec(429, "RESOURCE_EXHAUSTED", "Too many requests"),
    "MODEL_NOT_FOUND": ErrorSpec(404, "NOT_FOUND", "Model provider not found"),
    "BUDGET_EXHAUSTED": ErrorSpec(429, "RESOURCE_EXHAUSTED", "The token budget is spent"),
    "RUN_NOT_RUNNING": ErrorSpec(409, "FAILED_PRECONDITION", "No running run for the call"),
    "MODEL_UPSTREAM_UNAVAILABLE": ErrorSpec(502, "UNAVAILABLE", "The model provider failed"),
    "INTERNAL": ErrorSpec(500, "INTERNAL", "Internal error"),
}

# Codes for what the HTTP layer itself refuses (no route, wrong method, ...).
_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_FAILED",
    429: "RATE_LIMITED",
}


class FieldProblem(BaseModel):
    """One invalid field: `pointer` (RFC 6901) into the body, or `parameter` (and `in`)."""

    pointer: str | None = None
    parameter: str | None = None
    in_: str | None = Field(default=None, alias="in")
    detail: str


class Problem(BaseModel):
    """An RFC 9457 problem detail with Agent OS's stable `code` (see CATALOGUE)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str = Field(description="Stable error code from the Agent OS catalogue.")
    trace_id: str | None = None
    errors: list[FieldProblem] | None = None


def spec_of(code: str) -> ErrorSpec:
    """The catalogue entry of `code` (INTERNAL's for a code not in it)."""
    return CATALOGUE.get(code, CATALOGUE["INTERNAL"])


def problem_body(
    code: str, detail: str, instance: str, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    spec = spec_of(code)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code.lower().replace("_", "-"),
        "title": spec.title,
        "status": spec.http_status,
        "detail": detail,
        "instance": instance,
        "code": code if code in CATALOGUE else "INTERNAL",
        "trace_id": current_trace_id(),
    }
    if errors:
        body["errors"] = errors
    return body


def problem(
    code: str,
    detail: str,
    instance: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response for `code`."""
    body = problem_body(code, detail, instance, errors)
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM, headers=headers)


def error_headers(exc: Exception) -> dict[str, str]:
    """Headers an error answer carries: Retry-After (RFC 9110 §10.2.3) on 429,
    WWW-Authenticate (RFC 6750) on 401."""
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(max(1, round(exc.retry_after_s + 0.5)))}
    if isinstance(exc, Unauthenticated):
        return {"WWW-Authenticate": 'Bearer realm="agentos"'}
    return {}


async def agentos_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentOSError | IllegalTransition)
    errors = [{"pointer": e.pointer, "detail": e.message} for e in getattr(exc, "errors", [])]
    return problem(exc.code, str(exc), request.url.path, errors, error_headers(exc))


def _location(loc: tuple[Any, ...]) -> dict[str, str]:
    where, *path = loc
    if where == "body":
        parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
        return {"pointer": "/" + "/".join(parts) if parts else ""}
    return {"parameter": ".".join(str(p) for p in path), "in": str(where)}


async def request_validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{**_location(tuple(e["loc"])), "detail": e["msg"]} for e in exc.errors()]
    detail = "; ".join(f"{e.get('pointer', e.get('parameter'))}: {e['detail']}" for e in errors)
    return problem("VALIDATION_FAILED", detail, request.url.path, errors)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "INTERNAL" if exc.status_code >= 500 else "BAD_REQUEST")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Every method of the resource (RFC 9110 §15.5.6), not only the first route's.
        headers["Allow"] = ", ".join(allowed_methods(request.app.openapi(), request.url.path))
    response = problem(code, str(exc.detail), request.url.path, headers=headers)
    response.status_code = exc.status_code
    return response


def allowed_methods(document: dict[str, Any], path: str) -> list[str]:
    """The methods the OpenAPI `document` lists for the path template matching `path`."""
    for template, operations in document.get("paths", {}).items():
        pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return sorted(m.upper() for m in operations)
    return []


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem("INTERNAL", "internal error", request.url.path)


def responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route that can fail with `codes` (plus the ones every
    authenticated route can: 401, 429, 422 and 500)."""
    every = ("UNAUTHENTICATED", "RATE_LIMITED", "VALIDATION_FAILED", "BAD_REQUEST", "INTERNAL")
    by_status: dict[int, list[str]] = {}
    for code in (*codes, *every):
        by_status.setdefault(spec_of(code).http_status, []).append(code)
    return {
        status: {
            "description": "Problem (RFC 9457); code: " + ", ".join(sorted(set(names))),
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, names in sorted(by_status.items())
    }

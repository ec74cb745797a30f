"""One catalogue of error codes → RFC 9457 problem+json (and, later, google.rpc codes)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from controlplane.domain.errors import AgentOSError
from controlplane.domain.lifecycle import IllegalTransition
from controlplane.observability.tracing import current_trace_id

PROBLEM = "application/problem+json"

# code → (HTTP status, title)
CATALOGUE: dict[str, tuple[int, str]] = {
    "VALIDATION_FAILED": (422, "The request is not valid"),
    "EVENT_SCHEMA_VIOLATION": (422, "An event payload does not satisfy its schema"),
    "EVENT_TYPE_UNKNOWN": (500, "No schema is registered for the event"),
    "EVENT_SCHEMA_INCOMPATIBLE": (409, "The schema change would break consumers"),
    "NOT_FOUND": (404, "Not found"),
    "AGENT_NOT_FOUND": (404, "Agent not found"),
    "TENANT_NOT_FOUND": (404, "Tenant not found"),
    "ALREADY_EXISTS": (409, "Already exists"),
    "CONFLICT": (409, "Conflict"),
    "ILLEGAL_TRANSITION": (409, "Illegal lifecycle transition"),
    "INTERNAL": (500, "Internal error"),
}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str,
    errors: list[dict[str, str]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://agentos.io/problems/{code.lower().replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
        "trace_id": current_trace_id(),
    }
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


async def agentos_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentOSError | IllegalTransition)
    code = exc.code
    status, title = CATALOGUE.get(code, CATALOGUE["INTERNAL"])
    errors = [{"pointer": e.pointer, "detail": e.message} for e in getattr(exc, "errors", [])]
    return problem(status, code, title, str(exc), request.url.path, errors)


async def request_validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"pointer": "/" + "/".join(str(p) for p in e["loc"][1:]), "detail": e["msg"]}
        for e in exc.errors()
    ]
    return problem(
        422,
        "VALIDATION_FAILED",
        CATALOGUE["VALIDATION_FAILED"][1],
        "; ".join(f"{x['pointer']}: {x['detail']}" for x in errors),
        request.url.path,
        errors,
    )

"""Unknown query parameters are refused (400), as unknown fields are (Kubernetes strict
field validation): a misspelt `labelSelectr` must not silently list everything."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fastapi import Request

from controlplane.domain.errors import BadRequest


async def reject_unknown_query_parameters(request: Request) -> None:
    """An application dependency: 400 BAD_REQUEST naming the first unknown parameter."""
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    known = _known(id(request.app), request.app, getattr(route, "path", ""), request.method)
    for name in request.query_params:
        if name not in known:
            raise BadRequest(f"unknown query parameter {name!r}")


@lru_cache(maxsize=256)
def _known(_app_id: int, app: Any, path: str, method: str) -> frozenset[str]:
    operation = app.openapi().get("paths", {}).get(path, {}).get(method.lower(), {})
    return frozenset(p["name"] for p in operation.get("parameters", []) if p.get("in") == "query")

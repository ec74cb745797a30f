"""Tenant isolation on every route, generated from the application's route table (as its
OpenAPI document lists it — every route is documented there): a route added later is
checked without anyone remembering to (architecture/api-compatibility.md: a tenant never sees
another tenant's
objects).

For each `/api/v1` route and method:
- without a token: 401;
- under `/tenants/{tenant}`, as the *admin* of another tenant: 404 TENANT_NOT_FOUND, with the
  same body for a tenant that exists (with the named objects in it) as for one that does not,
  and nothing changed;
- otherwise: the route must be classified below, platform-admin only (403) or listing only
  what the caller may see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.api_harness import manifest, running_api

pytestmark = pytest.mark.postgres

PLATFORM_ONLY_PREFIX = "/api/v1/admin/"
FILTERED_LISTS = {("GET", "/api/v1/tenants")}
SELF_ROUTES = {("GET", "/api/v1/whoami")}  # the caller's own identity, nothing of others


def api_routes(app: Any) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/api/v1")
        for method in operations
    )


def fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"give the isolation test a value for the parameters of {path}"
    return path


def without_instance(body: dict[str, Any], tenant: str) -> dict[str, Any]:
    """A problem body without what differs per request: its `instance` and, when a tracer
    SDK is installed in this process (by an earlier test), its `trace_id`."""
    return {
        k: (v.replace(tenant, "T") if isinstance(v, str) else v)
        for k, v in body.items()
        if k not in ("instance", "trace_id")
    }


async def test_every_route_isolates_tenants(pg_url: str, tmp_path: Path) -> None:
    async with running_api(pg_url, tmp_path) as api:
        root = await api.token("root", platform_admin=True)
        async with api.client(root) as r:
            for tenant in ("team-a", "team-b"):
                assert (await r.put(f"/api/v1/tenants/{tenant}", json={})).status_code == 201
            assert (
                await r.post("/api/v1/tenants/team-b/agents", json=manifest("target"))
            ).status_code == 201
            made = await r.post(
                "/api/v1/tenants/team-b/tokens", json={"principal": "b", "role": "admin"}
            )
            run = await r.post("/api/v1/tenants/team-b/agents/target/runs", json={"input": 1})
            run_name = run.json()["metadata"]["name"]
            before = (await r.get("/api/v1/tenants/team-b/agents/target")).json()
            runs_before = (await r.get("/api/v1/tenants/team-b/runs")).json()
        token_b = made.json()
        intruder = await api.token("mallory", tenant="team-a", role="admin")

        routes = api_routes(api.app)
        assert len(routes) >= 15, routes
        checked = 0
        async with api.client() as anonymous, api.client(intruder) as m:
            for method, template in routes:
                body = manifest("target") if method in ("POST", "PUT", "PATCH") else None
                values = {"tenant": "team-b", "name": "target", "token_id": token_b["id"]}
                values |= {"event_id": "e", "agent": "target", "run": run_name}
                values |= {"approval": "no-such-approval"}
                url = fill(template, values)
                r = await anonymous.request(method, url, json=body)
                assert r.status_code == 401, (method, template, r.status_code)
                assert r.json()["code"] == "UNAUTHENTICATED"

                answer = await m.request(method, url, json=body)
                if "{tenant}" in template:
                    ghost = await m.request(
                        method, fill(template, values | {"tenant": "ghost"}), json=body
                    )
                    assert answer.status_code == 404, (method, template, answer.text)
                    assert answer.json()["code"] == "TENANT_NOT_FOUND"
                    assert without_instance(answer.json(), "team-b") == without_instance(
                        ghost.json(), "ghost"
                    ), f"{method} {template} tells an existing tenant from a missing one"
                elif template.startswith(PLATFORM_ONLY_PREFIX):
                    assert answer.status_code == 403, (method, template, answer.text)
                    assert answer.json()["code"] == "PERMISSION_DENIED"
                elif (method, template) in FILTERED_LISTS:
                    assert answer.status_code == 200
                    assert "team-b" not in answer.text
                elif (method, template) in SELF_ROUTES:
                    assert answer.status_code == 200, (method, template, answer.text)
                    assert answer.json()["tenant"] == "team-a"
                    assert "team-b" not in answer.text
                else:
                    pytest.fail(f"classify {method} {template} in the isolation test")
                checked += 1

        async with api.client(root) as r:
            after = (await r.get("/api/v1/tenants/team-b/agents/target")).json()
            runs_after = (await r.get("/api/v1/tenants/team-b/runs")).json()
            tokens = (await r.get("/api/v1/tenants/team-b/tokens")).json()["items"]
        assert after == before, "nothing changed in team-b"
        assert runs_after == runs_before, "no run was made or cancelled in team-b"
        assert [t["revokedAt"] for t in tokens] == [None]
        assert checked == len(routes)

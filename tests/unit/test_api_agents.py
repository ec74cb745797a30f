"""The agents REST API on the embedded database (SQLite): shapes, codes, problem+json."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from controlplane.api.app import create_app
from controlplane.bootstrap import Container
from controlplane.config import Settings
from controlplane.data import migrate
from controlplane.service.tokens import create_token

MANIFEST = {
    "apiVersion": "agentos.io/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "api-agent", "labels": {"team": "x"}},
    "spec": {"image": "local/none", "runtime": {"class": "process"}, "command": ["true"]},
}


@pytest.fixture
async def client(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    migrate.upgrade(url)
    container = Container(Settings(database_url=url, state_dir=tmp_path / "state"))
    app = create_app(container)
    async with container.uow() as uow:
        admin = await create_token(uow, "root", platform_admin=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"Authorization": f"Bearer {admin.token}"},
    ) as c:
        yield c
    await container.close()


async def test_put_creates_then_updates_and_get_shows_the_manifest_shape(client) -> None:
    created = await client.put("/api/v1/tenants/t1/agents/api-agent", json=MANIFEST)
    assert created.status_code == 201
    body = created.json()
    assert body["metadata"]["namespace"] == "t1" and body["metadata"]["generation"] == 1
    assert body["status"]["phase"] == "Created"
    changed = {**MANIFEST, "spec": {**MANIFEST["spec"], "priority": 5}}
    updated = await client.put("/api/v1/tenants/t1/agents/api-agent", json=changed)
    assert updated.status_code == 200 and updated.json()["metadata"]["generation"] == 2
    got = (await client.get("/api/v1/tenants/t1/agents/api-agent")).json()
    assert got["spec"]["priority"] == 5
    assert [h["to"] for h in got["status"]["history"]] == ["Created"]
    listed = (await client.get("/api/v1/tenants/t1/agents")).json()
    assert [i["metadata"]["name"] for i in listed["items"]] == ["api-agent"]


async def test_a_missing_agent_is_a_problem_with_a_stable_code(client) -> None:
    r = await client.get("/api/v1/tenants/t1/agents/nope")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["code"] == "AGENT_NOT_FOUND" and problem["status"] == 404
    assert problem["instance"] == "/api/v1/tenants/t1/agents/nope"


async def test_a_bad_manifest_names_each_field_by_json_pointer(client) -> None:
    bad = {**MANIFEST, "spec": {"runtime": {"class": "kata"}, "extra": 1}}
    r = await client.post("/api/v1/tenants/t1/agents", json=bad)
    assert r.status_code == 422
    pointers = {e["pointer"] for e in r.json()["errors"]}
    assert pointers == {"/spec/image", "/spec/runtime/class", "/spec/extra"}
    assert (await client.get("/api/v1/tenants/t1/agents")).json()["items"] == []


async def test_a_stale_if_match_is_a_conflict(client) -> None:
    created = (await client.post("/api/v1/tenants/t1/agents", json=MANIFEST)).json()
    version = created["metadata"]["resourceVersion"]
    changed = {**MANIFEST, "spec": {**MANIFEST["spec"], "priority": 1}}
    ok = await client.put(
        "/api/v1/tenants/t1/agents/api-agent", json=changed, headers={"If-Match": version}
    )
    assert ok.status_code == 200
    stale = await client.put(
        "/api/v1/tenants/t1/agents/api-agent", json=MANIFEST, headers={"If-Match": version}
    )
    assert stale.status_code == 409 and stale.json()["code"] == "CONFLICT"


async def test_creating_twice_is_already_exists(client) -> None:
    assert (await client.post("/api/v1/tenants/t1/agents", json=MANIFEST)).status_code == 201
    again = await client.post("/api/v1/tenants/t1/agents", json=MANIFEST)
    assert again.status_code == 409 and again.json()["code"] == "ALREADY_EXISTS"

"""Authentication, roles, rate limits and optimistic concurrency of the REST API, on real
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from controlplane.data.tables import api_tokens, idempotency_keys
from controlplane.domain.events.envelope import utcnow
from controlplane.service.tokens import token_hash
from tests.integration.api_harness import manifest, running_api

pytestmark = pytest.mark.postgres
AGENTS = "/api/v1/tenants/team-a/agents"


async def test_no_unknown_or_malformed_token_is_401_with_www_authenticate(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_api(pg_url, tmp_path) as api:
        for token in (None, "aos_unknown", "not-even-ours"):
            async with api.client(token) as client:
                r = await client.get(AGENTS)
            assert r.status_code == 401, token
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert r.json()["code"] == "UNAUTHENTICATED"


async def test_tokens_are_stored_hashed(pg_url: str, tmp_path: Path) -> None:
    async with running_api(pg_url, tmp_path) as api:
        token = await api.token("alice", tenant="team-a", role="viewer")
        async with api.container.engine.connect() as conn:
            stored = (await conn.execute(select(api_tokens.c.token_hash))).scalars().all()
        assert stored == [token_hash(token)] and token not in stored


async def test_viewer_reads_editor_writes_admin_manages_tokens_and_quota(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_api(pg_url, tmp_path) as api:
        root = await api.token("root", platform_admin=True)
        async with api.client(root) as c:
            assert (await c.put("/api/v1/tenants/team-a", json={})).status_code == 201
        viewer = await api.token("v", tenant="team-a", role="viewer")
        editor = await api.token("e", tenant="team-a", role="editor")
        admin = await api.token("a", tenant="team-a", role="admin")
        quota = {"quota": {"agents": 5}}
        token_body = {"principal": "new", "role": "viewer"}
        async with api.client(viewer) as v, api.client(editor) as e, api.client(admin) as a:
            assert (await v.get(AGENTS)).status_code == 200
            denied = await v.post(AGENTS, json=manifest("x"))
            assert denied.status_code == 403 and denied.json()["code"] == "PERMISSION_DENIED"
            assert (await e.post(AGENTS, json=manifest("x"))).status_code == 201
            assert (await e.put("/api/v1/tenants/team-a", json=quota)).status_code == 403
            assert (await e.get("/api/v1/tenants/team-a/tokens")).status_code == 403
            assert (await a.put("/api/v1/tenants/team-a", json=quota)).status_code == 200
            assert (
                await a.post("/api/v1/tenants/team-a/tokens", json=token_body)
            ).status_code == 201
            # a tenant admin neither creates nor deletes tenants, nor reaches the outbox
            assert (await a.delete("/api/v1/tenants/team-a")).status_code == 403
            assert (await a.get("/api/v1/admin/outbox/status")).status_code == 403


async def test_a_token_revoked_through_the_api_stops_at_once(pg_url: str, tmp_path: Path) -> None:
    async with running_api(pg_url, tmp_path) as api:
        admin = await api.token("a", tenant="team-a", role="admin")
        async with api.client(admin) as a:
            made = (
                await a.post(
                    "/api/v1/tenants/team-a/tokens", json={"principal": "temp", "role": "viewer"}
                )
            ).json()
            async with api.client(made["token"]) as temp:
                assert (await temp.get(AGENTS)).status_code == 200  # now cached
                revoked = await a.delete(f"/api/v1/tenants/team-a/tokens/{made['id']}")
                assert revoked.status_code == 200 and revoked.json()["revokedAt"]
                assert (await temp.get(AGENTS)).status_code == 401
            listed = (await a.get("/api/v1/tenants/team-a/tokens")).json()["items"]
        assert all("token" not in t for t in listed)
        assert {t["principal"] for t in listed} == {"a", "temp"}


async def test_an_expired_token_is_401(pg_url: str, tmp_path: Path) -> None:
    async with running_api(pg_url, tmp_path, auth_cache_ttl_s=0) as api:
        token = await api.token("late", tenant="team-a", role="viewer", ttl_s=3600)
        async with api.client(token) as client:
            assert (await client.get(AGENTS)).status_code == 200
            async with api.container.engine.begin() as conn:
                await conn.execute(
                    update(api_tokens).values(expires_at=utcnow() - timedelta(seconds=1))
                )
            assert (await client.get(AGENTS)).status_code == 401


async def test_over_the_rate_a_principal_gets_429_with_retry_after_before_idempotency(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_api(pg_url, tmp_path, rate_limit_per_s=0.01, rate_limit_burst=2) as api:
        alice = await api.token("alice", tenant="team-a", role="editor")
        bob = await api.token("bob", tenant="team-a", role="editor")
        key = {"Idempotency-Key": "k"}
        async with api.client(alice) as a, api.client(bob) as b:
            assert (await a.get(AGENTS)).status_code == 200
            assert (await a.get(AGENTS)).status_code == 200
            limited = await a.post(AGENTS, json=manifest("x"), headers=key)
            assert (await b.get(AGENTS)).status_code == 200, "buckets are per principal"
        assert limited.status_code == 429
        assert limited.json()["code"] == "RATE_LIMITED"
        assert int(limited.headers["Retry-After"]) >= 1
        async with api.container.engine.connect() as conn:
            keys = (await conn.execute(select(api_tokens.c.id))).all()
            held = (await conn.execute(select(idempotency_keys.c.key))).all()
        assert len(keys) == 2 and held == [], "a refused request stored no key"


async def test_stale_if_match_or_body_resource_version_is_409(pg_url: str, tmp_path: Path) -> None:
    async with running_api(pg_url, tmp_path) as api:
        root = await api.token("root", platform_admin=True)
        async with api.client(root) as c:
            created = await c.post(AGENTS, json=manifest("occ"))
            rv = created.json()["metadata"]["resourceVersion"]
            assert created.headers["ETag"] == f'"{rv}"'
            changed = manifest("occ")
            changed["spec"] = {**changed["spec"], "priority": 3}
            ok = await c.put(f"{AGENTS}/occ", json=changed, headers={"If-Match": f'"{rv}"'})
            assert ok.status_code == 200
            stale_header = await c.put(f"{AGENTS}/occ", json=changed, headers={"If-Match": rv})
            stale_body = manifest("occ")
            stale_body["metadata"]["resourceVersion"] = rv
            stale_in_body = await c.put(f"{AGENTS}/occ", json=stale_body)
            stale_delete = await c.delete(f"{AGENTS}/occ", headers={"If-Match": rv})
            tenant = (await c.get("/api/v1/tenants/team-a")).json()
            quota_ok = await c.put(
                "/api/v1/tenants/team-a",
                json={"quota": {"agents": 2}},
                headers={"If-Match": tenant["metadata"]["resourceVersion"]},
            )
            quota_stale = await c.put(
                "/api/v1/tenants/team-a",
                json={"metadata": {"resourceVersion": tenant["metadata"]["resourceVersion"]}},
            )
        for r in (stale_header, stale_in_body, stale_delete):
            assert r.status_code == 409 and r.json()["code"] == "CONFLICT"
        assert quota_ok.status_code == 200
        assert quota_stale.status_code == 409 and quota_stale.json()["code"] == "CONFLICT"

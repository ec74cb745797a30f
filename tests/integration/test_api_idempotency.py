"""Idempotency-Key on creates (architecture/api-compatibility.md, IETF httpapi Idempotency-Key
draft), on real
PostgreSQL and on SQLite."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from controlplane.data import migrate
from controlplane.data.tables import agents, idempotency_keys
from controlplane.domain.events.envelope import utcnow
from controlplane.service.idempotency import purge_expired
from tests.integration.api_harness import manifest, running_api

URL = "/api/v1/tenants/team-a/agents"


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    migrate.upgrade(url)
    return url


async def count_agents(api) -> int:
    async with api.container.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(agents))).scalar_one()


async def test_twenty_concurrent_identical_posts_with_one_key_create_one_agent(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await api.token("alice", tenant="team-a", role="editor")
        async with api.client(token) as client:
            answers = await asyncio.gather(
                *(
                    client.post(URL, json=manifest("once"), headers={"Idempotency-Key": "k-1"})
                    for _ in range(20)
                )
            )
        assert await count_agents(api) == 1
        kinds = Counter(
            "replay"
            if r.headers.get("Idempotent-Replayed") == "true"
            else f"{r.status_code} {r.json().get('code', '')}".strip()
            for r in answers
        )
        assert kinds["201"] == 1, kinds
        assert set(kinds) <= {"201", "replay", "409 IDEMPOTENCY_KEY_IN_USE"}, kinds
        uids = {r.json()["metadata"]["uid"] for r in answers if r.status_code == 201}
        assert len(uids) == 1, "every replay is the first response"


async def test_same_key_other_body_is_422_and_creates_nothing(db_url: str, tmp_path: Path) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await api.token("alice", tenant="team-a", role="editor")
        async with api.client(token) as client:
            first = await client.post(URL, json=manifest("one"), headers={"Idempotency-Key": "k"})
            other = await client.post(URL, json=manifest("two"), headers={"Idempotency-Key": "k"})
            again = await client.post(URL, json=manifest("one"), headers={"Idempotency-Key": "k"})
        assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
        assert other.status_code == 422
        assert other.headers["content-type"] == "application/problem+json"
        assert other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
        assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        assert await count_agents(api) == 1


async def test_the_same_key_from_another_principal_is_independent(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        alice = await api.token("alice", tenant="team-a", role="editor")
        bob = await api.token("bob", tenant="team-a", role="editor")
        headers = {"Idempotency-Key": "shared"}
        async with api.client(alice) as a, api.client(bob) as b:
            first = await a.post(URL, json=manifest("x1"), headers=headers)
            # bob's key is his own: his request runs, and the name is taken
            taken = await b.post(URL, json=manifest("x1"), headers=headers)
            # and with another body it is not "reused" either
            own = await b.post(URL, json=manifest("x2"), headers=headers)
        assert first.status_code == 201
        assert taken.status_code == 409 and taken.json()["code"] == "ALREADY_EXISTS"
        assert "Idempotent-Replayed" not in taken.headers
        assert own.status_code == 201 and "Idempotent-Replayed" not in own.headers
        assert await count_agents(api) == 2


async def test_a_failed_create_stores_no_key_so_a_retry_runs_again(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await api.token("alice", tenant="team-a", role="editor")
        bad = {**manifest("bad"), "spec": {"image": ""}}
        async with api.client(token) as client:
            failed = await client.post(URL, json=bad, headers={"Idempotency-Key": "retry"})
            async with api.container.engine.connect() as conn:
                keys = (
                    await conn.execute(select(func.count()).select_from(idempotency_keys))
                ).scalar_one()
            ok = await client.post(URL, json=manifest("bad"), headers={"Idempotency-Key": "retry"})
        assert failed.status_code == 422 and keys == 0
        assert ok.status_code == 201 and "Idempotent-Replayed" not in ok.headers


async def test_an_expired_key_is_purged_and_then_runs_again(db_url: str, tmp_path: Path) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await api.token("alice", tenant="team-a", role="editor")
        async with api.client(token) as client:
            r = await client.post(URL, json=manifest("p"), headers={"Idempotency-Key": "old"})
            assert r.status_code == 201
            async with api.container.engine.begin() as conn:
                await conn.execute(
                    update(idempotency_keys).values(expires_at=utcnow() - timedelta(seconds=1))
                )
            async with api.container.uow() as uow:
                assert await purge_expired(uow) == 1
            again = await client.post(URL, json=manifest("p"), headers={"Idempotency-Key": "old"})
        assert again.status_code == 409 and again.json()["code"] == "ALREADY_EXISTS"


async def test_keys_are_kept_for_the_configured_retention(db_url: str, tmp_path: Path) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await api.token("alice", tenant="team-a", role="editor")
        async with api.client(token) as client:
            await client.post(URL, json=manifest("kept"), headers={"Idempotency-Key": "24h"})
        async with api.container.engine.connect() as conn:
            created, expires = (
                await conn.execute(
                    select(idempotency_keys.c.created_at, idempotency_keys.c.expires_at)
                )
            ).one()
        assert expires - created == timedelta(hours=24)

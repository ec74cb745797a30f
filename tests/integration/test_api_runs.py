"""The runs API (architecture/runs.md) on real PostgreSQL and SQLite: create with its events,
admission, idempotency, cancel, steps, lists, bad input, roles, and the audit trail."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from controlplane.data.tables import outbox, runs
from controlplane.domain.runs.lifecycle import RunPhase, RunReason
from tests.integration.api_harness import Api, running_api
from tests.integration.runs_helpers import (
    advance,
    agent,
    count_runs,
    db_url_fixture,  # noqa: F401  (the fixture `db_url`)
    record_step,
    run_events_written,
)

T = "/api/v1/tenants/team-a"


async def editor_api(api: Api, *agents: dict) -> str:
    token = await api.token("alice", tenant="team-a", role="editor")
    async with api.client(token) as client:
        for manifest in agents:
            assert (await client.post(f"{T}/agents", json=manifest)).status_code == 201
    return token


async def test_a_created_run_is_pending_with_its_created_and_dispatch_events(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await editor_api(api, agent("worker"))
        async with api.client(token) as client:
            made = await client.post(f"{T}/agents/worker/runs", json={"input": {"q": "2+2"}})
            agent_uid = (await client.get(f"{T}/agents/worker")).json()["metadata"]["uid"]
        assert made.status_code == 201, made.text
        run = made.json()
        assert re.fullmatch(r"run-[0-9a-f]{12}", run["metadata"]["name"])
        assert run["kind"] == "Run" and run["metadata"]["agent"] == "worker"
        assert run["status"]["phase"] == "Pending" and run["status"]["attempt"] == 0
        assert run["spec"] == {"input": {"q": "2+2"}, "timeoutSeconds": 600}
        assert made.headers["Location"].endswith(f"/agents/worker/runs/{run['metadata']['name']}")
        uid = run["metadata"]["uid"]
        assert await run_events_written(api) == [
            ("run.created", uid, agent_uid),
            ("run.dispatch", uid, agent_uid),
        ]
        async with api.container.engine.connect() as conn:
            dispatch = (
                await conn.execute(select(outbox).where(outbox.c.event_type == "run.dispatch"))
            ).one()
            stored = (await conn.execute(select(runs.c.dispatch_event_id))).scalar_one()
        assert stored == dispatch.event_id
        assert dispatch.payload["run_id"] == uid and dispatch.payload["agent"] == "worker"


async def test_timeout_seconds_of_the_body_wins_over_the_agents(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await editor_api(api, agent("worker", timeoutSeconds=30))
        async with api.client(token) as client:
            default = await client.post(f"{T}/agents/worker/runs", json={"input": 1})
            given = await client.post(
                f"{T}/agents/worker/runs", json={"input": 1, "timeoutSeconds": 5}
            )
        assert default.json()["spec"]["timeoutSeconds"] == 30
        assert given.json()["spec"]["timeoutSeconds"] == 5


async def test_twenty_concurrent_creates_with_one_key_make_exactly_one_run(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await editor_api(api, agent("worker", maxQueued=1000))
        async with api.client(token) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        f"{T}/agents/worker/runs",
                        json={"input": "once"},
                        headers={"Idempotency-Key": "k-1"},
                    )
                    for _ in range(20)
                )
            )
            other_body = await client.post(
                f"{T}/agents/worker/runs", json={"input": "x"}, headers={"Idempotency-Key": "k-1"}
            )
        kinds = Counter(
            "replay"
            if r.headers.get("Idempotent-Replayed") == "true"
            else f"{r.status_code} {r.json().get('code', '')}".strip()
            for r in answers
        )
        assert kinds["201"] == 1, kinds
        assert set(kinds) <= {"201", "replay", "409 IDEMPOTENCY_KEY_IN_USE"}, kinds
        assert len({r.json()["metadata"]["uid"] for r in answers if r.status_code == 201}) == 1
        assert other_body.status_code == 422
        assert other_body.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
        assert await count_runs(api) == 1
        types = [t for t, _, _ in await run_events_written(api)]
        assert types.count("run.dispatch") == 1 and types.count("run.created") == 1


async def test_a_reject_queue_refuses_a_run_when_every_slot_is_busy(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await editor_api(api, agent("strict", concurrency=2, queue="reject"))
        async with api.client(token) as client:
            first = [
                await client.post(f"{T}/agents/strict/runs", json={"input": i}) for i in range(2)
            ]
            refused = await client.post(f"{T}/agents/strict/runs", json={"input": 3})
            assert [r.status_code for r in first] == [201, 201]
            assert refused.status_code == 409 and refused.json()["code"] == "AGENT_BUSY"
            assert await count_runs(api) == 2
            # A slot frees when a run ends.
            await client.post(f"{T}/runs/{first[0].json()['metadata']['name']}/cancel")
            again = await client.post(f"{T}/agents/strict/runs", json={"input": 4})
        assert again.status_code == 201


async def test_max_queued_refuses_a_run_in_enqueue_mode_too(db_url: str, tmp_path: Path) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await editor_api(api, agent("queue", maxQueued=2))
        async with api.client(token) as client:
            codes = [
                (await client.post(f"{T}/agents/queue/runs", json={"input": i})).status_code
                for i in range(3)
            ]
            refused = await client.post(f"{T}/agents/queue/runs", json={"input": 9})
        assert codes == [201, 201, 409]
        assert refused.json()["code"] == "AGENT_BUSY"
        assert await count_runs(api) == 2


async def test_cancel_ends_a_run_once_and_a_finished_run_cannot_be_cancelled(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await editor_api(api, agent("worker"))
        async with api.client(token) as client:
            name = (await client.post(f"{T}/agents/worker/runs", json={"input": 1})).json()[
                "metadata"
            ]["name"]
            await advance(api, "team-a", name, RunPhase.DISPATCHED, RunReason.DISPATCHED)
            canceled = await client.post(f"{T}/agents/worker/runs/{name}/cancel")
            again = await client.post(f"{T}/runs/{name}/cancel")
            read = await client.get(f"{T}/runs/{name}")
        assert canceled.status_code == 200, canceled.text
        status = canceled.json()["status"]
        assert (status["phase"], status["reason"]) == ("Canceled", "CanceledByUser")
        assert status["finishedAt"] and status["attempt"] == 1
        assert again.status_code == 409 and again.json()["code"] == "RUN_FINISHED"
        assert read.json()["status"]["phase"] == "Canceled"
        types = [t for t, _, _ in await run_events_written(api)]
        assert types == ["run.created", "run.dispatch", "run.dispatched", "run.canceled"]


async def test_steps_are_listed_in_the_order_they_were_recorded(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await editor_api(api, agent("worker"))
        async with api.client(token) as client:
            name = (await client.post(f"{T}/agents/worker/runs", json={"input": 1})).json()[
                "metadata"
            ]["name"]
            for call_id in ("b-2", "a-1", "c-3"):
                await record_step(api, "team-a", name, call_id)
            steps = (await client.get(f"{T}/runs/{name}/steps")).json()["items"]
            under_agent = (await client.get(f"{T}/agents/worker/runs/{name}/steps")).json()
            wrong_agent = await client.get(f"{T}/agents/other/runs/{name}/steps")
        assert [s["callId"] for s in steps] == ["b-2", "a-1", "c-3"]
        assert under_agent["items"] == steps
        assert wrong_agent.status_code == 404 and wrong_agent.json()["code"] == "RUN_NOT_FOUND"


async def test_lists_page_newest_first_and_filter_by_agent_phase_and_labels(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await editor_api(api, agent("one"), agent("two"))
        made = []
        async with api.client(token) as client:
            for i, who in enumerate(["one", "two", "one", "two", "one"]):
                body = {"input": i, "labels": {"batch": "x" if i < 3 else "y"}}
                r = await client.post(f"{T}/agents/{who}/runs", json=body)
                made.append(r.json()["metadata"]["name"])
            await client.post(f"{T}/runs/{made[0]}/cancel")
            names, params = [], {"limit": "2"}
            while True:
                page = (await client.get(f"{T}/runs", params=params)).json()
                assert page["kind"] == "RunList" and len(page["items"]) <= 2
                names += [r["metadata"]["name"] for r in page["items"]]
                if "continue" not in page["metadata"]:
                    break
                params = {"limit": "2", "continue": page["metadata"]["continue"]}
            of_one = (await client.get(f"{T}/agents/one/runs")).json()["items"]
            by_query = (await client.get(f"{T}/runs", params={"agent": "one"})).json()["items"]
            canceled = (await client.get(f"{T}/runs", params={"phase": "Canceled"})).json()
            waiting = await client.get(f"{T}/runs", params={"phase": "Pending,Dispatched"})
            labelled = await client.get(f"{T}/runs", params={"labelSelector": "batch=y"})
            bad_phase = await client.get(f"{T}/runs", params={"phase": "Sleeping"})
            bad_token = await client.get(f"{T}/runs", params={"continue": "nope"})
        assert names == made[::-1]
        assert [r["metadata"]["name"] for r in of_one] == [made[4], made[2], made[0]]
        assert by_query == of_one
        assert [r["metadata"]["name"] for r in canceled["items"]] == [made[0]]
        assert len(waiting.json()["items"]) == 4
        assert {r["metadata"]["name"] for r in labelled.json()["items"]} == {made[3], made[4]}
        assert bad_phase.status_code == 400 and bad_phase.json()["code"] == "BAD_REQUEST"
        assert bad_token.status_code == 400


async def test_bad_input_is_refused_with_its_field_named_and_nothing_written(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await editor_api(api, agent("worker"))
        root = await api.token("root", platform_admin=True)
        async with api.client(root) as admin:
            assert (
                await admin.post("/api/v1/tenants/team-b/agents", json=agent("theirs"))
            ).status_code == 201
        async with api.client(token) as client:
            unknown = await client.post(f"{T}/agents/ghost/runs", json={"input": 1})
            misspelt = await client.post(f"{T}/agents/worker/runs", json={"inptu": 1})
            too_long = await client.post(
                f"{T}/agents/worker/runs", json={"input": 1, "timeoutSeconds": 0}
            )
            bad_label = await client.post(
                f"{T}/agents/worker/runs", json={"input": 1, "labels": {"-x": "y"}}
            )
            not_json = await client.post(
                f"{T}/agents/worker/runs",
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            )
            other_tenant = await client.post(
                "/api/v1/tenants/team-b/agents/theirs/runs", json={"input": 1}
            )
        async with api.client(root) as admin:
            wrong_tenant = await admin.post(f"{T}/agents/theirs/runs", json={"input": 1})
        assert unknown.status_code == 404 and unknown.json()["code"] == "AGENT_NOT_FOUND"
        assert misspelt.status_code == 422
        assert {e["pointer"] for e in misspelt.json()["errors"]} == {"/input", "/inptu"}
        assert too_long.status_code == 422
        assert [e["pointer"] for e in too_long.json()["errors"]] == ["/timeoutSeconds"]
        assert bad_label.status_code == 422
        assert not_json.status_code == 422 and not_json.json()["code"] == "VALIDATION_FAILED"
        assert other_tenant.status_code == 404
        assert other_tenant.json()["code"] == "TENANT_NOT_FOUND"
        assert wrong_tenant.status_code == 404
        assert wrong_tenant.json()["code"] == "AGENT_NOT_FOUND"
        assert await count_runs(api) == 0
        assert await run_events_written(api) == []


async def test_a_viewer_reads_runs_but_cannot_create_or_cancel_them(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await editor_api(api, agent("worker"))
        viewer = await api.token("vic", tenant="team-a", role="viewer")
        async with api.client(token) as client:
            name = (await client.post(f"{T}/agents/worker/runs", json={"input": 1})).json()[
                "metadata"
            ]["name"]
        async with api.client(viewer) as client:
            create = await client.post(f"{T}/agents/worker/runs", json={"input": 1})
            cancel = await client.post(f"{T}/runs/{name}/cancel")
            read = await client.get(f"{T}/agents/worker/runs/{name}")
            audit = await client.get(f"{T}/audit")
        assert create.status_code == 403 and create.json()["code"] == "PERMISSION_DENIED"
        assert cancel.status_code == 403
        assert read.status_code == 200 and read.json()["metadata"]["name"] == name
        assert audit.status_code == 403, "the audit trail is for tenant admins"
        assert await count_runs(api) == 1


async def test_the_audit_trail_lists_a_runs_creation_and_cancel_with_their_principal(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await editor_api(api, agent("worker"))
        admin = await api.token("ada", tenant="team-a", role="admin")
        async with api.client(token) as client:
            name = (await client.post(f"{T}/agents/worker/runs", json={"input": 1})).json()[
                "metadata"
            ]["name"]
        async with api.client(admin) as client:
            await client.post(f"{T}/runs/{name}/cancel")
            everything = (await client.get(f"{T}/audit")).json()
            run_only = (
                await client.get(
                    f"{T}/audit", params={"resource": f"tenants/team-a/agents/worker/runs/{name}"}
                )
            ).json()
            by_alice = (await client.get(f"{T}/audit", params={"actor": "alice"})).json()
            paged = (await client.get(f"{T}/audit", params={"limit": "1"})).json()
            future = await client.get(f"{T}/audit", params={"since": "2999-01-01T00:00:00Z"})
        resource = f"tenants/team-a/agents/worker/runs/{name}"
        assert [(e["action"], e["principal"].split(" (")[0]) for e in run_only["items"]] == [
            ("run.create", "alice"),
            ("run.cancel", "ada"),
        ]
        assert {e["resource"] for e in run_only["items"]} == {resource}
        assert "run.create" in {e["action"] for e in by_alice["items"]}
        assert {e["principal"].split(" (")[0] for e in by_alice["items"]} == {"alice"}
        assert len(paged["items"]) == 1 and paged["metadata"]["continue"]
        assert paged["items"][0] == everything["items"][0]
        assert future.json()["items"] == []

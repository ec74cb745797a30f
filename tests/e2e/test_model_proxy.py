"""The agent gateway's model proxy end to end (architecture/model-gateway.md): `agentos
serve` on the real PostgreSQL and NATS, an SDK agent (tests/agents/model_agent.py) in a
process sandbox, and a test double of an OpenAI-compatible provider
(tests/doubles/openai_upstream.py) holding a credential only serve's environment has.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.waiting import wait_until
from tests.doubles import openai_upstream as double
from tests.doubles.openai_upstream import OpenAIUpstreamDouble
from tests.e2e.runs_plane import ROOT, Plane, started_plane, tenant_name

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

AGENT = ROOT / "tests" / "agents" / "model_agent.py"
SECRET = f"sk-double-{uuid.uuid4().hex}"
KEY_ENV = "AGENTOS_TEST_MODEL_KEY_DOUBLE"


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstreamDouble]:
    with OpenAIUpstreamDouble(SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, plane_database: str, upstream: OpenAIUpstreamDouble
) -> Iterator[Plane]:
    # The provider's secret in serve's environment only; never an agent's.
    with started_plane(
        tmp_path_factory.mktemp("models"), plane_database, {KEY_ENV: SECRET}
    ) as control:
        yield control


def _gateway(plane: Plane) -> str:
    return f"http://127.0.0.1:{plane.env['AGENTOS_GATEWAY_PORT']}"


def _agent(plane: Plane, tenant: str, name: str, **runs: Any) -> None:
    manifest = {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "image": "local/model-agent",
            "command": [sys.executable, str(AGENT)],
            "runtime": {"class": "process"},
            "restartPolicy": "Always",
            "readiness": {"heartbeat": {}, "periodSeconds": 1},
            "env": [
                {"name": "PYTHONPATH", "value": str(ROOT / "sdk" / "python")},
                {"name": "COUNT_DIR", "value": str(plane.counts)},
                {"name": "AGENTOS_HEARTBEAT_SECONDS", "value": "1"},
            ],
            "runs": {"concurrency": 2, **runs},
        },
    }
    answer = plane.http.post(f"/api/v1/tenants/{tenant}/agents", json=manifest)
    assert answer.status_code == 201, answer.text
    plane.wait_agent(tenant, name, "Ready")


def _provider(plane: Plane, tenant: str, upstream: OpenAIUpstreamDouble, **limits: Any) -> None:
    body = {
        "baseUrl": upstream.base_url,
        "credentialRef": {"env": KEY_ENV},
        "models": ["double-chat", "double-embed"],
        "pricing": {"input": "1.00", "output": "2.00", "cachedInput": "0.50"},
        "limits": limits,
    }
    answer = plane.http.put(f"/api/v1/tenants/{tenant}/models/double", json=body)
    assert answer.status_code == 201, answer.text
    assert plane.http.put(f"/api/v1/tenants/{tenant}/models/double", json=body).status_code == 200


def _setup(
    plane: Plane, upstream: OpenAIUpstreamDouble, runs: dict[str, Any] | None = None, **limits: Any
) -> str:
    tenant = tenant_name()
    plane.http.put(f"/api/v1/tenants/{tenant}", json={"quota": {}})
    _provider(plane, tenant, upstream, **limits)
    _agent(plane, tenant, "caller", **(runs or {}))
    return tenant


def _llm_steps(plane: Plane, tenant: str, run: str, count: int = 1) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = wait_until(
        lambda: (
            len(s := [x for x in plane.steps(tenant, run) if x["type"] == "llm"]) >= count and s
        ),
        30,
        f"{count} llm steps of {run}",
    )
    return steps


# Uncached input 13 at $1, cached 4 at $0.50, output 5 at $2, per million tokens.
COST = (13 * 1.0 + 4 * 0.5 + 5 * 2.0) / 1e6


def test_a_chat_call_succeeds_metered_with_the_upstreams_tokens_and_the_providers_price(
    plane: Plane, upstream: OpenAIUpstreamDouble
) -> None:
    tenant = _setup(plane, upstream)
    run = plane.submit(tenant, "caller", {"mode": "chat"})
    done = plane.wait_run(tenant, run)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["output"]["content"] == double.REPLY
    [step] = _llm_steps(plane, tenant, run)
    assert step["name"] == "double-chat" and step["callId"] == "1"
    usage = step["usage"]
    assert (usage["inputTokens"], usage["outputTokens"], usage["cachedInputTokens"]) == (17, 5, 4)
    assert usage["costUsd"] == pytest.approx(COST)
    assert step["output"]["agentos"]["latencyMs"] > 0
    rolled = wait_until(
        lambda: (u := plane.run(tenant, run)["status"]["usage"])["inputTokens"] == 17 and u,
        30,
        "run usage rolled up",
    )
    assert rolled["costUsd"] == pytest.approx(COST)
    received = [r for r in upstream.received if r.body.get("model") == "double-chat"][-1]
    assert received.headers["authorization"] == f"Bearer {SECRET}"
    assert not any("aosa_" in v for v in received.headers.values()), "sandbox credential leaked"
    tenant_usage = plane.http.get(f"/api/v1/tenants/{tenant}/usage").json()
    assert tenant_usage["total"]["inputTokens"] == 17 and tenant_usage["total"]["requests"] == 1


def test_a_streamed_call_passes_the_chunks_through_and_records_the_final_usage(
    plane: Plane, upstream: OpenAIUpstreamDouble
) -> None:
    tenant = _setup(plane, upstream)
    run = plane.submit(tenant, "caller", {"mode": "stream"})
    done = plane.wait_run(tenant, run)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    output = done["status"]["output"]
    assert output["content"] == double.REPLY
    assert output["chunks"] == len(double.REPLY_PARTS) + 1  # the usage chunk last
    assert output["usage"]["prompt_tokens"] == 17
    [step] = _llm_steps(plane, tenant, run)
    assert step["usage"]["outputTokens"] == 5 and step["usage"]["costUsd"] == pytest.approx(COST)
    assert step["output"]["agentos"]["stream"] is True
    assert step["output"]["agentos"]["timeToFirstTokenMs"] > 0
    assert step["output"]["choices"][0]["message"]["content"] == double.REPLY
    streamed = [r for r in upstream.received if r.body.get("stream")][-1]
    assert streamed.body["stream_options"] == {"include_usage": True}


def test_embeddings_are_metered_as_an_llm_step(
    plane: Plane, upstream: OpenAIUpstreamDouble
) -> None:
    tenant = _setup(plane, upstream)
    run = plane.submit(tenant, "caller", {"mode": "embeddings", "model": "double-embed"})
    done = plane.wait_run(tenant, run)
    assert done["status"]["output"]["vectors"] == 2, done["status"]
    [step] = _llm_steps(plane, tenant, run)
    assert (
        step["name"] == "double-embed" and step["usage"]["inputTokens"] == double.EMBEDDING_TOKENS
    )


def test_a_spent_budget_answers_429_with_retry_after_and_the_run_fails_with_it(
    plane: Plane, upstream: OpenAIUpstreamDouble
) -> None:
    tenant = _setup(plane, upstream, {"maxAttempts": 1}, tokenBudget=20, budgetWindowSeconds=3600)
    run = plane.submit(tenant, "caller", {"mode": "chat", "times": 3})
    done = plane.wait_run(tenant, run)
    assert done["status"]["phase"] == "Failed", done["status"]
    assert done["status"]["error"]["type"] == "ModelRateLimited"
    limited = json.loads((plane.counts / f"{run}.limited").read_text())
    assert limited["status"] == 429 and limited["code"] == "BUDGET_EXHAUSTED"
    assert 0 < limited["retryAfter"] <= 3600
    assert len(_llm_steps(plane, tenant, run)) == 1  # the call that crossed it was served


def test_a_credential_of_agent_a_cannot_attribute_a_call_to_agent_bs_run(
    plane: Plane, upstream: OpenAIUpstreamDouble
) -> None:
    tenant = _setup(plane, upstream)
    _agent(plane, tenant, "other")
    theirs = plane.submit(tenant, "other", {"mode": "sleep", "seconds": 20})
    wait_until(lambda: plane.run(tenant, theirs)["status"]["phase"] == "Running", 30, "B running")
    token = plane.sandbox_env(tenant, "caller")["AGENTOS_AGENT_TOKEN"]
    body = {"model": "double-chat", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {token}"}
    url = _gateway(plane) + "/v1/chat/completions"
    stolen = httpx.post(url, json=body, headers={**headers, "AgentOS-Run": theirs}, timeout=10)
    assert stolen.status_code == 404, stolen.text
    assert stolen.json()["code"] == "RUN_NOT_FOUND"
    idle = httpx.post(url, json=body, headers=headers, timeout=10)  # A has no running run
    assert idle.status_code == 409 and idle.json()["code"] == "RUN_NOT_RUNNING", idle.text
    bad = httpx.post(url, json={"model": "double-chat"}, headers=headers, timeout=10)
    assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "/messages"
    plane.http.post(f"/api/v1/tenants/{tenant}/runs/{theirs}/cancel")


def test_the_credential_is_in_no_agent_env_file_log_line_or_api_answer(
    plane: Plane, upstream: OpenAIUpstreamDouble
) -> None:
    tenant = _setup(plane, upstream)
    run = plane.submit(tenant, "caller", {"mode": "chat"})
    assert plane.wait_run(tenant, run)["status"]["phase"] == "Succeeded"
    _llm_steps(plane, tenant, run)
    seen_env = (plane.counts / f"{run}.env").read_text()
    assert "AGENTOS_AGENT_TOKEN" in seen_env and SECRET not in seen_env
    assert KEY_ENV not in json.loads(seen_env)
    assert SECRET not in json.dumps(plane.sandbox_env(tenant, "caller"))
    pid = plane.sandbox_pid(tenant, "caller")
    assert SECRET.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    sandbox = plane.agent(tenant, "caller")["status"]["sandboxID"]
    for path in (plane.tmp / "state" / "process" / sandbox).rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    answers = [
        plane.http.get(f"/api/v1/tenants/{tenant}/models").text,
        plane.http.get(f"/api/v1/tenants/{tenant}/models/double").text,
        plane.http.get(f"/api/v1/tenants/{tenant}/runs/{run}").text,
        plane.http.get(f"/api/v1/tenants/{tenant}/runs/{run}/steps").text,
        plane.http.get(f"/api/v1/tenants/{tenant}/usage").text,
        plane.http.get("/api/v1/audit", params={"tenant": tenant}).text,
    ]
    for answer in answers:
        assert SECRET not in answer
    assert '"env": "' + KEY_ENV in answers[1].replace('":"', '": "')
    assert SECRET not in (plane.tmp / "serve.log").read_text()


def test_a_recorded_replay_makes_no_upstream_model_call_and_ends_with_the_same_output(
    plane: Plane, upstream: OpenAIUpstreamDouble
) -> None:
    """Replay (architecture/replay.md) of a run of three model calls: the replay's llm steps
    come from the origin's journal, so the provider sees no request and no token is spent."""
    tenant = _setup(plane, upstream)
    origin = plane.submit(tenant, "caller", {"mode": "chat", "times": 3})
    done = plane.wait_run(tenant, origin)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert len(_llm_steps(plane, tenant, origin, count=3)) == 3
    calls_before = len(upstream.received)

    answer = plane.http.post(
        f"/api/v1/tenants/{tenant}/runs/{origin}/replay", json={"mode": "recorded"}
    )
    assert answer.status_code == 201, answer.text
    replay = plane.wait_run(tenant, answer.json()["metadata"]["name"])

    assert replay["status"]["phase"] == "Succeeded", replay["status"]
    assert replay["status"]["output"] == done["status"]["output"]
    assert replay["status"]["replayOf"]["name"] == origin, replay["status"]
    assert not replay["status"].get("divergences"), replay["status"]
    assert len(upstream.received) == calls_before, "no model call reached the provider"
    usage = replay["status"].get("usage") or {}
    assert usage.get("inputTokens", 0) == 0 and usage.get("outputTokens", 0) == 0, usage

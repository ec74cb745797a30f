"""The web console at /ui (architecture/console.md) in a real browser: Debian's Chromium driven
by Playwright, against `agentos serve` on the real PostgreSQL and NATS with SDK agents in
process sandboxes (a model-calling one behind the OpenAI test double, one with a destructive
tool that waits for approval). Every page must log no console error and load nothing from
anywhere but Agent OS itself. Screenshots land in build/test-output/console/ (ignored).
"""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from controlplane.api.console import ConsoleNotBuilt, check_built
from harness.waiting import wait_until
from tests.doubles import openai_upstream as double
from tests.doubles.openai_upstream import OpenAIUpstreamDouble
from tests.e2e.runs_plane import ROOT, Plane, started_plane, tenant_name

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

CHROMIUM = Path("/usr/bin/chromium")
OUT = ROOT / "build" / "test-output" / "console"
MODEL_AGENT = ROOT / "tests" / "agents" / "model_agent.py"
APPROVAL_AGENT = ROOT / "tests" / "agents" / "approval_agent.py"
SECRET = f"sk-double-{uuid.uuid4().hex}"
KEY_ENV = "AGENTOS_TEST_MODEL_KEY_DOUBLE"
LIVE_S = 90_000  # ms: an agent's way to Ready, a run's to its end
# The examples `make run` applies that need no containerd (runtime class `process`).
EXAMPLES = ("tool-agent.yaml", "python-heartbeat.yaml", "checkpoint-agent.yaml")


@dataclass
class World:
    """The plane and what the tests share: tenant `a` (a model agent `caller`, an approval
    agent `deleter`, a viewer's and an editor's token) and tenant `b` (agent `hidden`)."""

    plane: Plane
    a: str
    b: str
    admin: str
    viewer: str
    editor: str
    b_run: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _manifest(plane: Plane, name: str, agent: Path, **runs: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name, "labels": {"team": "console"}},
        "spec": {
            "image": "local/console-test",
            "command": [sys.executable, str(agent)],
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


def _create(plane: Plane, tenant: str, name: str, agent: Path, **runs: Any) -> None:
    answer = plane.http.post(
        f"/api/v1/tenants/{tenant}/agents", json=_manifest(plane, name, agent, **runs)
    )
    assert answer.status_code == 201, answer.text


def _token(plane: Plane, tenant: str, role: str) -> str:
    answer = plane.http.post(
        f"/api/v1/tenants/{tenant}/tokens", json={"principal": f"console-{role}", "role": role}
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, plane_database: str) -> Iterator[World]:
    with (
        OpenAIUpstreamDouble(SECRET) as upstream,
        started_plane(tmp_path_factory.mktemp("console"), plane_database, {KEY_ENV: SECRET}) as p,
    ):
        a, b = tenant_name(), tenant_name()
        for tenant in (a, b):
            assert p.http.put(f"/api/v1/tenants/{tenant}", json={"quota": {}}).status_code < 300
        provider = {
            "baseUrl": upstream.base_url,
            "credentialRef": {"env": KEY_ENV},
            "models": ["double-chat"],
            "pricing": {"input": "1.00", "output": "2.00", "cachedInput": "0.50"},
        }
        assert p.http.put(f"/api/v1/tenants/{a}/models/double", json=provider).status_code == 201
        _create(p, a, "caller", MODEL_AGENT)
        _create(p, a, "deleter", APPROVAL_AGENT, approval="destructive")
        _create(p, b, "hidden", MODEL_AGENT)
        admin = str(p.http.headers["Authorization"]).removeprefix("Bearer ")
        found = World(p, a, b, admin, _token(p, a, "viewer"), _token(p, a, "editor"))
        for tenant, name in ((a, "caller"), (a, "deleter"), (b, "hidden")):
            p.wait_agent(tenant, name, "Ready", timeout_s=90)
        found.b_run = p.submit(b, "hidden", {"mode": "sleep", "seconds": 0.1})
        yield found


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Browser]:
    # After `world`: Playwright's sync API keeps an event loop running in this thread, and
    # the async database fixture under `world` must be set up before it.
    if not CHROMIUM.exists():
        pytest.fail("Debian's Chromium is missing: `hack/services.sh up` installs it")
    with sync_playwright() as pw:
        yield _launch(pw)


def _launch(pw: Playwright) -> Browser:
    # Root in a container: Chromium's own sandbox needs user namespaces it may not get.
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])


class Console:
    """One browser context (its own sessionStorage) on the plane's /ui, recording the
    page's console errors, uncaught exceptions and every request it makes."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": 1440, "height": 900})
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def login(self, token: str, route: str = "#/agents") -> Page:
        self.page.goto(f"{self.base}/ui/{route}")
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.get_by_role("button", name="Log out")).to_be_visible()
        return self.page

    def go(self, route: str) -> Page:
        self.page.evaluate("route => { location.hash = route }", route)
        return self.page

    def check_clean(self, allowed: tuple[str, ...] = ()) -> None:
        """No console error (but those naming an `allowed` text), and every request went to
        the Agent OS origin."""
        errors = [e for e in self.errors if not any(a in e for a in allowed)]
        assert errors == [], errors
        foreign = [u for u in self.requests if not u.startswith(f"{self.base}/")]
        assert foreign == [], foreign
        assert any(u.endswith("/ui/app.js") for u in self.requests)


@pytest.fixture
def console(browser: Browser, world: World) -> Iterator[Console]:
    c = Console(browser, world.plane.base)
    yield c
    c.context.close()


def _phase(page: Page, selector: str) -> Any:
    return page.locator(f"{selector} [data-col=phase]")


def test_a_token_logs_in_and_agents_reach_ready_on_screen_without_a_reload(
    console: Console, world: World
) -> None:
    page = console.login(world.admin, f"#/agents?tenant={world.a}")
    expect(_phase(page, "tr[data-agent=caller]")).to_have_text("Ready")
    page.evaluate("window.__sameDocument = true")
    _create(world.plane, world.a, "latecomer", MODEL_AGENT)
    row = "tr[data-agent=latecomer]"
    expect(page.locator(row)).to_be_visible(timeout=LIVE_S)
    expect(_phase(page, row)).to_have_text("Ready", timeout=LIVE_S)
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    assert page.evaluate("sessionStorage.getItem('agentos.token')") == world.admin
    assert world.admin not in page.url
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / "console-agents.png"))
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(OUT / "console-agents-dark.png"))
    page.locator(f"{row} a").click()
    expect(page.get_by_role("heading", name="Agent latecomer")).to_be_visible()
    expect(page.locator("ol.timeline li").last).to_contain_text("Ready")
    console.go("#/platform")
    expect(page.get_by_role("table", name="Outbox events by state")).to_be_visible()
    console.check_clean()


def test_the_examples_applied_while_the_page_is_open_reach_ready_on_screen(
    console: Console, world: World
) -> None:
    tenant = tenant_name()
    assert world.plane.http.put(f"/api/v1/tenants/{tenant}", json={"quota": {}}).status_code < 300
    page = console.login(world.admin, f"#/agents?tenant={tenant}")
    expect(page.get_by_role("heading", name="Agents")).to_be_visible()
    page.evaluate("window.__sameDocument = true")
    names = []
    for example in EXAMPLES:
        manifest = yaml.safe_load((ROOT / "examples" / "agents" / example).read_text())
        names.append(manifest["metadata"]["name"])
        answer = world.plane.http.post(f"/api/v1/tenants/{tenant}/agents", json=manifest)
        assert answer.status_code == 201, answer.text
    for name in names:
        expect(_phase(page, f"tr[data-agent={name}]")).to_have_text("Ready", timeout=LIVE_S)
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    console.check_clean()


def _json_of(page: Page, selector: str) -> Any:
    return json.loads(page.locator(selector).inner_text())


def test_a_run_submitted_from_the_console_shows_its_trace_and_the_apis_totals(
    console: Console, world: World
) -> None:
    page = console.login(world.editor, "#/runs")
    page.get_by_label("Agent", exact=True).select_option("caller")
    page.get_by_label("Input (JSON)").fill('{"mode": "chat", "times": 3}')
    page.get_by_role("button", name="Submit run").click()
    expect(page.get_by_role("heading", name="Trace")).to_be_visible()
    name = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#run-phase")).to_have_text("Succeeded", timeout=LIVE_S)
    expect(page.locator("li.step[data-type=llm]")).to_have_count(3)
    # The proxy records model calls in batches: the API's totals settle after the run ends.
    api = wait_until(
        lambda: (
            (r := world.plane.run(world.a, name))["status"]["usage"]["inputTokens"]
            == 3 * double.PROMPT_TOKENS
            and r
        ),
        30,
        "the run's usage of its three model calls",
    )
    usage = api["status"]["usage"]
    assert _json_of(page, "#run-output pre") == api["status"]["output"]
    expect(page.locator("#run-input-tokens")).to_have_text(str(usage["inputTokens"]))
    expect(page.locator("#run-output-tokens")).to_have_text(str(usage["outputTokens"]))
    assert usage["inputTokens"] > 0
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / "console-run-screen.png"))  # one laptop screen: README's
    page.locator("li.step .step-row").first.click()
    expect(page.locator(".step-detail").first).to_contain_text("Input")
    page.screenshot(path=str(OUT / "console-run.png"), full_page=True)
    console.check_clean()


def test_a_running_run_is_canceled_from_its_page(console: Console, world: World) -> None:
    run = world.plane.submit(world.a, "caller", {"mode": "sleep", "seconds": 60})
    page = console.login(world.editor, f"#/runs/{world.a}/{run}")
    expect(page.locator("#run-phase")).to_have_text("Running", timeout=LIVE_S)
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-phase")).to_have_text("Canceled")
    assert world.plane.run(world.a, run)["status"]["phase"] == "Canceled"
    console.check_clean()


def _waiting_approval(world: World, run: str) -> dict[str, Any]:
    plane = world.plane
    wait_until(lambda: plane.run(world.a, run)["status"]["phase"] == "InputRequired", 60, "waiting")
    answer = plane.http.get(f"/api/v1/tenants/{world.a}/runs/{run}/approvals?state=pending")
    [approval] = answer.json()["items"]
    return dict(approval)


def test_a_waiting_run_is_in_the_inbox_and_approving_it_there_lets_it_finish(
    console: Console, world: World
) -> None:
    page = console.login(world.editor, "#/runs")
    page.get_by_label("Agent", exact=True).select_option("deleter")
    page.get_by_label("Input (JSON)").fill('{"before": 2, "path": "/tmp/console-a", "after": 1}')
    page.get_by_role("button", name="Submit run").click()
    expect(page.get_by_role("heading", name="Trace")).to_be_visible()
    run = page.url.rsplit("/", 1)[-1]
    # Live: the steps done so far are on screen while the run waits (not ended).
    expect(page.locator("#run-phase")).to_have_text("InputRequired", timeout=LIVE_S)
    expect(page.locator("li.step[data-type=tool]")).to_have_count(2)
    approval = _waiting_approval(world, run)
    console.go("#/approvals")
    card = page.locator(f"article[data-approval='{approval['id']}']")
    expect(card).to_contain_text("delete_file")
    card.get_by_label("Comment").fill("fine from the console")
    card.get_by_role("button", name="Approve").click()
    expect(card).to_have_count(0)
    done = world.plane.wait_run(world.a, run)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    console.go(f"#/runs/{world.a}/{run}")
    expect(page.locator("#run-phase")).to_have_text("Succeeded")
    expect(page.locator("li.step[data-type=tool]")).to_have_count(4)
    [decided] = world.plane.http.get(f"/api/v1/tenants/{world.a}/runs/{run}/approvals").json()[
        "items"
    ]
    assert (decided["state"], decided["comment"]) == ("approved", "fine from the console")
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / "console-run-approved.png"), full_page=True)
    console.check_clean()


def test_a_viewer_sees_no_approve_button_and_the_api_refuses_it_anyway(
    console: Console, world: World
) -> None:
    run = world.plane.submit(world.a, "deleter", {"path": "/tmp/console-v"})
    approval = _waiting_approval(world, run)
    page = console.login(world.viewer, "#/approvals")
    card = page.locator(f"article[data-approval='{approval['id']}']")
    expect(card).to_contain_text("delete_file")
    expect(card.get_by_role("button")).to_have_count(0)
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    console.go("#/runs")
    expect(page.get_by_role("table", name="Runs")).to_be_visible()
    expect(page.get_by_role("button", name="Submit run")).to_have_count(0)
    refused = httpx.post(
        f"{world.plane.base}/api/v1/tenants/{world.a}/runs/{run}/approvals/{approval['id']}",
        json={"decision": "approve"},
        headers={"Authorization": f"Bearer {world.viewer}"},
    )
    assert refused.status_code == 403, refused.text
    console.check_clean()
    world.plane.http.post(
        f"/api/v1/tenants/{world.a}/runs/{run}/approvals/{approval['id']}",
        json={"decision": "reject"},
    )


def test_a_tenants_user_sees_no_other_tenants_agents_or_runs_not_even_by_url(
    console: Console, world: World
) -> None:
    page = console.login(world.editor, "#/agents")
    expect(_phase(page, "tr[data-agent=caller]")).to_have_text("Ready")
    options = page.get_by_label("Tenant").locator("option").all_inner_texts()
    assert options == [world.a]
    for route in (
        f"#/agents/{world.b}/hidden",
        f"#/runs/{world.b}/{world.b_run}",
        f"#/agents?tenant={world.b}",
        f"#/runs?tenant={world.b}",
        f"#/usage?tenant={world.b}",
    ):
        console.go(route)
        expect(page.get_by_role("alert")).to_contain_text("not found")
    for route in ("#/agents", "#/runs", "#/approvals", "#/usage"):
        console.go(route)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        expect(page.locator("main table, main .empty, main article").first).to_be_visible()
        text = page.locator("main").inner_text()
        assert "hidden" not in text and world.b_run not in text and world.b not in text
    # The browser reports the API's 404s as console errors; nothing else may be there.
    console.check_clean(allowed=("the server responded with a status of 404",))


def test_the_usage_page_charts_tokens_and_cost_from_the_api(console: Console, world: World) -> None:
    world.plane.wait_run(world.a, world.plane.submit(world.a, "caller", {"mode": "chat"}))
    page = console.login(world.admin, f"#/usage?tenant={world.a}")
    expect(page.locator("#chart-agent-tokens")).to_be_visible()
    total = world.plane.http.get(f"/api/v1/tenants/{world.a}/usage").json()["total"]
    tokens = total["inputTokens"] + total["outputTokens"]
    expect(page.locator("#usage-total")).to_contain_text(f"{tokens} tokens")
    expect(page.get_by_role("table", name="Top runs by cost")).to_contain_text("caller")
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / "console-usage.png"), full_page=True)
    console.check_clean()


def test_ui_answers_with_a_self_only_content_security_policy(world: World) -> None:
    answer = httpx.get(f"{world.plane.base}/ui", follow_redirects=True)
    assert answer.status_code == 200 and str(answer.url).endswith("/ui/")
    assert '<script type="module" src="app.js">' in answer.text
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert answer.headers["x-frame-options"] == "DENY"
    assert httpx.get(f"{world.plane.base}/api/v1/whoami").status_code == 401


def test_serve_refuses_to_start_without_the_console_bundle(tmp_path: Path) -> None:
    with pytest.raises(ConsoleNotBuilt, match="make console"):
        check_built(tmp_path)


def test_the_committed_bundle_is_the_build_of_console_src(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm, "npm is needed to build the console (Node.js from the machine's packages)"
    work = tmp_path / "console"
    shutil.copytree(ROOT / "console", work, ignore=shutil.ignore_patterns("node_modules"))
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=work, check=True, timeout=300
    )
    built = tmp_path / "static"
    subprocess.run(["node", "build.mjs", "--outdir", str(built)], cwd=work, check=True)
    committed = ROOT / "controlplane" / "api" / "console" / "static"
    names = sorted(p.name for p in committed.iterdir())
    assert names == sorted(p.name for p in built.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(committed, built, names, shallow=False)
    assert (mismatch, errors) == ([], []), "run `make console` and commit the bundle"

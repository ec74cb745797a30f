"""The runs commands of the CLI against `agentos serve` on embedded defaults (SQLite), each a
subprocess: run (plain, --follow, --wait), get runs, describe run, cancel run, logs agent,
audit. The run is moved along through the service layer on the same database, as the
gateway would (the gateway is not part of this test)."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from controlplane.api.app import create_app
from controlplane.bootstrap import Container
from controlplane.config import Settings
from controlplane.domain.runs.lifecycle import RunPhase, RunReason
from harness.ports import free_port
from harness.waiting import wait_until
from tests.e2e.test_serve import CLI, embedded_env, healthz
from tests.integration.api_harness import Api
from tests.integration.runs_helpers import advance, record_step

AGENT = {
    "apiVersion": "agentos.io/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "worker", "namespace": "team-a"},
    "spec": {
        "image": "local/none",
        "runtime": {"class": "process"},
        "command": ["sh", "-c", "echo hello-from-the-agent; exec sleep 600"],
    },
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`agentos serve` on SQLite; yields the environment of a CLI holding an admin token.
    No NATS (embedded off): the runs these tests make stay Pending, and steps are written
    through the service layer, so the CLI's views are tested without an agent."""
    port = free_port()
    env = {**embedded_env(tmp_path), "AGENTOS_EMBEDDED_NATS": "false"}
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: healthz(base, proc), 60, "serve answering /healthz")
        token = subprocess.run(
            [*CLI, "token", "create", "--principal", "ops", "--platform-admin"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        yield {**env, "AGENTOS_API_URL": base, "AGENTOS_TOKEN": token}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def side_door(env: dict[str, str], tmp_path: Path) -> Api:
    """The same database, from the test's process, to move runs along."""
    container = Container(
        Settings(database_url=env["AGENTOS_DATABASE_URL"], state_dir=tmp_path / "side")
    )
    return Api(container, create_app(container))


def created_name(line: str) -> str:
    assert line.startswith("run/") and line.endswith(" created"), line
    return line[len("run/") : -len(" created")]


async def test_run_get_describe_cancel_audit_and_logs(
    served: dict[str, str], tmp_path: Path
) -> None:
    manifest = tmp_path / "worker.yaml"
    manifest.write_text(yaml.safe_dump(AGENT))
    assert cli(served, "apply", "-f", str(manifest)).returncode == 0
    (tmp_path / "input.json").write_text('{"question": "2+2"}')
    made = cli(served, "run", "worker", "-n", "team-a", "--input", f"@{tmp_path / 'input.json'}")
    assert made.returncode == 0, made.stderr
    name = created_name(made.stdout.strip())
    api = side_door(served, tmp_path)
    try:
        await record_step(api, "team-a", name, "plan", type="llm", name="chat",
                          usage={"inputTokens": 12, "outputTokens": 5})  # fmt: skip
        await record_step(api, "team-a", name, "calc", parentCallId="plan")
    finally:
        await api.container.close()

    listed = cli(served, "get", "runs", "-n", "team-a", "--agent", "worker", "-o", "wide")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].startswith("NAME")
    assert name in listed.stdout and "Pending" in listed.stdout
    as_json = json.loads(cli(served, "get", "runs", "-n", "team-a", "-o", "json").stdout)
    assert [r["metadata"]["name"] for r in as_json["items"]] == [name]
    assert cli(served, "get", "runs", "-n", "team-a", "--phase", "Running").stdout.count("\n") == 1

    described = cli(served, "describe", "run", name, "-n", "team-a")
    assert described.returncode == 0, described.stderr
    lines = described.stdout.splitlines()
    assert "Phase:         Pending" in lines and "Steps:" in lines
    steps = lines[lines.index("Steps:") + 1 :]
    assert steps[0].strip().startswith("plan") and "12/5 tokens" in steps[0]
    assert steps[1].strip().startswith("└─ calc"), "a child step sits under its parent"

    assert cli(served, "cancel", "run", name, "-n", "team-a").returncode == 0
    again = cli(served, "cancel", "run", name, "-n", "team-a")
    assert again.returncode == 1 and "RUN_FINISHED" in again.stderr
    missing = cli(served, "run", "ghost", "-n", "team-a", "--input", "1")
    assert missing.returncode == 1 and "AGENT_NOT_FOUND" in missing.stderr
    assert cli(served, "run", "worker", "-n", "team-a", "--input", "{bad").returncode == 2

    where = ("-n", "team-a", "--resource", "tenants/team-a/agents/worker")
    table = cli(served, "audit", *where)
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("TIME") and "run.create" in table.stdout
    trail = json.loads(cli(served, "audit", *where, "-o", "json").stdout)
    actions = [e["action"] for e in trail]
    assert actions[:1] == ["agent.create"] and {"run.create", "run.cancel"} <= set(actions)
    assert {e["principal"].split()[0] for e in trail if e["action"].startswith("run.")} == {"ops"}
    by_actor = json.loads(
        cli(served, "audit", "-n", "team-a", "--actor", "ops", "-o", "json").stdout
    )
    assert by_actor and all(e["principal"].startswith("ops ") for e in by_actor)

    def logs() -> str | None:
        out = cli(served, "logs", "agent", "worker", "-n", "team-a", "--tail", "5").stdout
        return out if "hello-from-the-agent" in out else None

    wait_until(logs, 60, "the agent's output in `logs agent`")


async def test_run_follow_prints_each_step_and_exits_zero_when_it_succeeds(
    served: dict[str, str], tmp_path: Path
) -> None:
    manifest = tmp_path / "worker.yaml"
    manifest.write_text(yaml.safe_dump(AGENT))
    assert cli(served, "apply", "-f", str(manifest)).returncode == 0
    follow = subprocess.Popen(
        [*CLI, "run", "worker", "-n", "team-a", "--input", '{"n": 1}', "--follow"],
        env=served,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follow.stdout is not None
    name = created_name(follow.stdout.readline().strip())
    api = side_door(served, tmp_path)
    try:
        await advance(api, "team-a", name, RunPhase.DISPATCHED, RunReason.DISPATCHED)
        await advance(api, "team-a", name, RunPhase.RUNNING, RunReason.STARTED)
        await record_step(api, "team-a", name, "step-1", output=4)
        async with api.container.uow("system:test") as uow:
            from controlplane.service import runs as svc

            record = await uow.runs.get("team-a", name)
            await svc.transition(
                uow, record, RunPhase.SUCCEEDED, RunReason.COMPLETED, output={"answer": 4}
            )
            await uow.commit()
    finally:
        await api.container.close()
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("run.created") and "Pending" in lines[0]
    assert any(line.strip().startswith("step  step-1") for line in lines)
    assert f"run/{name} Succeeded Completed" in lines
    assert json.loads("\n".join(lines[lines.index(f"run/{name} Succeeded Completed") + 1 :])) == {
        "answer": 4
    }


def test_run_wait_exits_non_zero_when_the_run_is_canceled(
    served: dict[str, str], tmp_path: Path
) -> None:
    manifest = tmp_path / "worker.yaml"
    manifest.write_text(yaml.safe_dump(AGENT))
    assert cli(served, "apply", "-f", str(manifest)).returncode == 0
    waiting = subprocess.Popen(
        [*CLI, "run", "worker", "-n", "team-a", "--input", "1", "--wait"],
        env=served,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiting.stdout is not None
    name = created_name(waiting.stdout.readline().strip())
    headers = {"Authorization": f"Bearer {served['AGENTOS_TOKEN']}"}
    canceled = httpx.post(
        f"{served['AGENTOS_API_URL']}/api/v1/tenants/team-a/runs/{name}/cancel", headers=headers
    )
    assert canceled.status_code == 200
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 1
    assert f"run/{name} Canceled CanceledByUser" in out

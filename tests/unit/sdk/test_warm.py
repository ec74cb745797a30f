"""The warm-sandbox bootstrap (`python3 -m agentos_sdk.warm`): it waits with no identity,
takes the handoff the control plane writes once, and becomes the agent with its environment
(architecture/warm-pools.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from agentos_sdk._core import warm

from controlplane.runtimes import handoff
from harness.waiting import wait_until

SDK = Path(__file__).resolve().parents[3] / "sdk" / "python"


def test_the_sdk_and_the_control_plane_name_the_same_files() -> None:
    assert (warm.READY_FILE, warm.HANDOFF_FILE, warm.TAKEN_FILE) == (
        handoff.READY_FILE,
        handoff.HANDOFF_FILE,
        handoff.TAKEN_FILE,
    )


def test_the_agents_environment_drops_the_pools_variables_and_adds_the_agents() -> None:
    current = {"PATH": "/bin", "AGENTOS_WARM_POOL": "abc", "AGENTOS_CONFIG_FILE": "/agentos/c"}
    bound = {"AGENTOS_AGENT_TOKEN": "aosa_x", "PATH": "/usr/bin"}
    assert warm.agent_environ(current, bound) == {
        "PATH": "/usr/bin",
        "AGENTOS_CONFIG_FILE": "/agentos/c",
        "AGENTOS_AGENT_TOKEN": "aosa_x",
    }


@pytest.mark.parametrize(
    ("argv", "target"),
    [
        (["python3", "-m", "agent.main", "--x"], ("module", "agent.main")),
        (["/usr/bin/python3", "/agent/tool_agent.py"], ("path", "/agent/tool_agent.py")),
        (["python3", "-u", "/agent/tool_agent.py"], None),
        (["/agent/run.sh"], None),
        (["python3"], None),
    ],
)
def test_python_agents_run_in_the_bootstrap_and_anything_else_is_execd(
    argv: list[str], target: tuple[str, str] | None
) -> None:
    assert warm.in_process_target(argv) == target


def test_a_handoff_is_taken_once_and_its_secret_not_left_on_disk(tmp_path: Path) -> None:
    handoff.write_handoff(tmp_path, ["python3", "a.py"], {"AGENTOS_AGENT_TOKEN": "s"}, {"k": 1})
    assert warm.wait_for_handoff(tmp_path) == {
        "argv": ["python3", "a.py"],
        "env": {"AGENTOS_AGENT_TOKEN": "s"},
    }
    assert not (tmp_path / warm.HANDOFF_FILE).exists()
    assert (tmp_path / warm.TAKEN_FILE).read_text() == ""
    assert handoff.handoff_state(tmp_path) is handoff.HandoffState.HANDED
    assert json.loads((tmp_path / handoff.CONFIG_FILE).read_text()) == {"k": 1}


REPORT = """
import json, os, sys
from pathlib import Path
folder = Path(os.environ["AGENTOS_CONFIG_FILE"]).parent
report = {"env": dict(os.environ), "argv": sys.argv, "config": json.loads(
    (folder / "config.json").read_text()), "sdk": "agentos_sdk" in sys.modules}
(folder / "report.json").write_text(json.dumps(report))
"""


@pytest.mark.parametrize("in_process", [True, False])
def test_the_bootstrap_waits_then_becomes_the_agent_it_is_handed(
    tmp_path: Path, in_process: bool
) -> None:
    script = tmp_path / "agent.py"
    script.write_text(REPORT)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(SDK)}
    env |= {"AGENTOS_CONFIG_FILE": str(tmp_path / "config.json"), "AGENTOS_WARM_POOL": "k"}
    bootstrap = subprocess.Popen([sys.executable, "-m", "agentos_sdk.warm"], env=env)
    try:

        def warm() -> bool:
            assert bootstrap.poll() is None, "the bootstrap exited before it was warm"
            return handoff.handoff_state(tmp_path) is handoff.HandoffState.WARM

        wait_until(warm, 20, "the bootstrap waiting for its handoff")
        argv = [sys.executable, str(script), "--flag"]
        if not in_process:
            argv = [sys.executable, "-c", REPORT, "--flag"]
        bound = {"AGENTOS_AGENT_TOKEN": "aosa_mine", "AGENT_LABEL": "me"}
        handoff.write_handoff(tmp_path, argv, bound, {"who": "me"})
        assert bootstrap.wait(20) == 0
    finally:
        bootstrap.kill()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["env"]["AGENTOS_AGENT_TOKEN"] == "aosa_mine"
    assert report["env"]["AGENT_LABEL"] == "me"
    assert "AGENTOS_WARM_POOL" not in report["env"]
    assert report["config"] == {"who": "me"}
    assert report["argv"][-1] == "--flag"
    # In process, the SDK the bootstrap imported is already loaded for the agent.
    assert report["sdk"] is in_process

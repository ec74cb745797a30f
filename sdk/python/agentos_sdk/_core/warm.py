"""The warm-sandbox bootstrap: wait, holding no identity, until an agent claims this sandbox,
then become that agent (late binding; architecture/warm-pools.md in the Agent OS repository).

A warm pool's sandbox runs `python3 -m agentos_sdk.warm`. It imports the SDK (and the modules
in `AGENTOS_WARM_PRELOAD`, comma-separated), writes `warm-ready` into its folder (the
directory of `AGENTOS_CONFIG_FILE`, `/agentos`) and polls that folder for `handoff.json`
(`{"argv": [...], "env": {...}}`), which the control plane writes when it hands the sandbox
to an agent. It renames it to `handoff.taken`, reads it, empties it, drops its own
`AGENTOS_WARM_*` variables, sets the agent's environment, and runs the agent's argv:

- `python3 -m MODULE ARGS...` and `python3 FILE.py ARGS...` run in this process (`runpy`),
  so the interpreter and the SDK are already loaded: the agent starts in milliseconds;
- any other argv replaces this process (`os.execvpe`).

The environment is set before the agent's code runs, so `Agent()` reads its gateway,
credential and settings as in a sandbox started for it.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

READY_FILE = "warm-ready"
HANDOFF_FILE = "handoff.json"
TAKEN_FILE = "handoff.taken"
WARM_PREFIX = "AGENTOS_WARM_"
PRELOAD = "AGENTOS_WARM_PRELOAD"
POLL_S = 0.002
PYTHONS = frozenset({"python", "python3", os.path.basename(sys.executable)})


def agent_folder(environ: Mapping[str, str]) -> Path:
    """The sandbox's `/agentos` folder: where `AGENTOS_CONFIG_FILE` is, else `/agentos`."""
    config = environ.get("AGENTOS_CONFIG_FILE", "")
    return Path(config).parent if config else Path("/agentos")


def wait_for_handoff(folder: Path, poll_s: float = POLL_S) -> dict[str, Any]:
    """Block until `folder` holds a handoff; return it (`argv`: list, `env`: dict). The file
    is taken (renamed) before it is read and emptied after, so it is read once."""
    handoff, taken = folder / HANDOFF_FILE, folder / TAKEN_FILE
    while True:
        try:
            handoff.rename(taken)
            break
        except FileNotFoundError:
            time.sleep(poll_s)
    payload: dict[str, Any] = json.loads(taken.read_text())
    taken.write_text("")
    return payload


def agent_environ(current: Mapping[str, str], bound: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment: this sandbox's (without `AGENTOS_WARM_*`), then `bound`."""
    env = {k: v for k, v in current.items() if not k.startswith(WARM_PREFIX)}
    env.update(bound)
    return env


def in_process_target(argv: Sequence[str]) -> tuple[str, str] | None:
    """("module", name) or ("path", file) when argv is `python3 -m MODULE ...` or
    `python3 FILE.py ...`; None for anything else (exec'd)."""
    if len(argv) < 2 or os.path.basename(argv[0]) not in PYTHONS:
        return None
    if argv[1] == "-m" and len(argv) >= 3:
        return ("module", argv[2])
    if argv[1].endswith(".py"):
        return ("path", argv[1])
    return None


def become(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Run the agent: set the environment, then run argv here or exec it (see the module
    docstring). Returns when an in-process agent returns; an exec does not return."""
    os.environ.clear()
    os.environ.update(env)
    target = in_process_target(argv)
    if target is None:
        os.execvpe(argv[0], list(argv), dict(env))  # noqa: S606 - the agent's own argv
    kind, name = target
    if kind == "module":
        sys.argv = [name, *argv[3:]]
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv[1:])
        sys.path.insert(0, os.path.dirname(os.path.abspath(name)))
        runpy.run_path(name, run_name="__main__")


def preload(environ: Mapping[str, str], load: Callable[[str], object]) -> None:
    """Import the SDK and the modules named in `AGENTOS_WARM_PRELOAD`."""
    load("agentos_sdk")
    for name in filter(None, (n.strip() for n in environ.get(PRELOAD, "").split(","))):
        load(name)


def main() -> NoReturn:
    """The bootstrap's entry (`python3 -m agentos_sdk.warm`)."""
    folder = agent_folder(os.environ)
    preload(os.environ, importlib.import_module)
    (folder / READY_FILE).write_text(str(os.getpid()))
    payload = wait_for_handoff(folder)
    env = agent_environ(os.environ, payload.get("env") or {})
    argv = [str(a) for a in payload["argv"]]
    become(argv, env)
    sys.exit(0)

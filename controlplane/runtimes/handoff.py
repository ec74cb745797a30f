"""The host side of the warm-sandbox handoff: files in the sandbox's `/agentos` folder
(adr/0020-warm-pools-late-binding.md; the sandbox side is the SDK's `agentos_sdk.warm`).

1. The bootstrap in a warm sandbox writes `warm-ready` once it has imported the SDK and waits.
2. At a claim the controller writes the agent's `config.json`, then `handoff.json`
   (`{"argv": [...], "env": {...}}`, mode 0600, owned by the folder's owner: the agent's
   user), each written to a temporary name and renamed, so the bootstrap reads all or nothing.
3. The bootstrap renames `handoff.json` to `handoff.taken`, reads it, empties it (the secret
   is not left on disk), and runs the agent's argv with that environment.

A folder with `handoff.json` or `handoff.taken` has been handed off: a controller that
restarts mid-claim does not hand it off twice (which would issue a second credential).
The names are the SDK's (agentos_sdk/_core/warm.py); a test holds the two to the same.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any

READY_FILE = "warm-ready"
HANDOFF_FILE = "handoff.json"
TAKEN_FILE = "handoff.taken"
CONFIG_FILE = "config.json"


class HandoffState(StrEnum):
    COLD = "Cold"  # not a warm sandbox (or its bootstrap has not started yet)
    WARM = "Warm"  # the bootstrap waits for a handoff
    HANDED = "Handed"  # a handoff was written (taken or not yet)


def handoff_state(folder: Path) -> HandoffState:
    """Where the sandbox whose `/agentos` is `folder` stands (blocking: a few stat calls)."""
    if (folder / HANDOFF_FILE).exists() or (folder / TAKEN_FILE).exists():
        return HandoffState.HANDED
    if (folder / READY_FILE).exists():
        return HandoffState.WARM
    return HandoffState.COLD


def write_handoff(
    folder: Path, argv: list[str], env: dict[str, str], config: dict[str, Any]
) -> None:
    """Write the agent's config and its handoff into `folder` (see the module docstring).
    Blocking. Raises OSError when the folder is gone (the sandbox was removed)."""
    stat = folder.stat()
    _write(folder / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True), 0o644, None)
    payload = json.dumps({"argv": argv, "env": env})
    _write(folder / HANDOFF_FILE, payload, 0o600, (stat.st_uid, stat.st_gid))


def _write(path: Path, text: str, mode: int, owner: tuple[int, int] | None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    tmp.replace(path)

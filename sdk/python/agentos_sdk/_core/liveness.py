"""The sandbox's liveness file: touched while the agent serves, for `readiness.heartbeat`.

Agent OS names the file in `AGENTOS_HEARTBEAT_FILE` and calls the agent Ready while the
file's mtime is younger than `periodSeconds * failureThreshold` seconds (the heartbeat probe
of the process and containerd runtimes). `Agent.serve_async` touches it every
`period_s` seconds from its own task until it stops.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

HEARTBEAT_FILE = "AGENTOS_HEARTBEAT_FILE"
log = logging.getLogger("agentos_sdk")


async def touch_forever(path: Path, period_s: float) -> None:
    """Touch `path` now and every `period_s` seconds until cancelled.

    An OSError (a read-only or vanished folder) is logged once and retried each period:
    the agent keeps serving, and the control plane sees it not Ready.
    """
    warned = False
    while True:
        try:
            await asyncio.to_thread(path.touch)
            warned = False
        except OSError as exc:
            if not warned:
                log.warning("cannot touch the heartbeat file %s: %s", path, exc)
                warned = True
        await asyncio.sleep(period_s)

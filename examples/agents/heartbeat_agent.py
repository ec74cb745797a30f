"""An example agent in Python: reads its config and heartbeats until told to stop.

Agent OS hands every agent two files through the environment:
- AGENTOS_CONFIG_FILE: the agent's `spec.config` as JSON;
- AGENTOS_HEARTBEAT_FILE: the file to touch while healthy (`readiness: {heartbeat: {}}`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

stopping = False


def stop(_signum: int, _frame: object) -> None:
    global stopping
    stopping = True


def main() -> int:
    signal.signal(signal.SIGTERM, stop)
    config = json.loads(Path(os.environ["AGENTOS_CONFIG_FILE"]).read_text() or "{}")
    heartbeat = Path(os.environ["AGENTOS_HEARTBEAT_FILE"])
    period_s = float(config.get("heartbeat_period_s", 0.5))
    fail_after_s = config.get("fail_after_s")
    started = time.monotonic()
    print(f"agent up with config {config}", flush=True)
    while not stopping:
        heartbeat.touch()
        if fail_after_s is not None and time.monotonic() - started > float(fail_after_s):
            print("simulated crash", flush=True)
            return 3
        time.sleep(period_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())

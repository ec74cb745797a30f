"""Where the runs benchmark's time and CPU go (bench/runs.py): CPU seconds per process group
over a window, and py-spy sampling of serve."""

from __future__ import annotations

import contextlib
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.serve import ServeProcess, machine_busy_seconds, process_cpu_seconds


def log(message: str) -> None:
    print(f"[bench.runs] {message}", file=sys.stderr, flush=True)


class CpuWindow:
    """CPU seconds of serve, the agents' sandboxes, nats-server, this process and the machine
    between `start()` and `stop()`."""

    def __init__(self, serve: ServeProcess, agent_pids: list[int], nats_pid: int) -> None:
        self.pids = {"serve": [serve.pid], "agents": agent_pids, "nats": [nats_pid]}
        self.before: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        totals = {}
        for group, pids in self.pids.items():
            total = 0.0
            for pid in pids:
                with contextlib.suppress(OSError):
                    total += process_cpu_seconds(pid)
            totals[group] = total
        usage = resource.getrusage(resource.RUSAGE_SELF)
        totals["load_generator"] = usage.ru_utime + usage.ru_stime
        totals["machine"] = machine_busy_seconds()
        return totals

    def start(self) -> None:
        self.before = self.read()

    def stop(self) -> dict[str, float]:
        after = self.read()
        return {k: after[k] - self.before[k] for k in after}


def start_py_spy(binary: str | None, serve: ServeProcess, seconds: float) -> Any:
    """py-spy sampling serve (raw collapsed stacks in serve.tmp / "py-spy.txt"), or None."""
    if not binary:
        return None
    out = serve.tmp / "py-spy.txt"
    command = [binary, "record", "--pid", str(serve.pid), "--format", "raw", "--rate", "200"]
    command += ["--duration", str(int(seconds)), "--nonblocking", "--output", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, out


def stop_py_spy(profiler: Any) -> None:
    """Stop py-spy (it writes on SIGINT) and print serve's hottest frames by self and total
    samples to stderr."""
    if profiler is None:
        return
    proc, out = profiler
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    if not out.exists():
        log("py-spy wrote nothing")
        return
    leaf: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    log(f"py-spy: {total} samples of serve (raw stacks in {out})")
    for title, table in (("self", leaf), ("total", inclusive)):
        log(f"py-spy top by {title}:")
        for frame, n in sorted(table.items(), key=lambda kv: -kv[1])[:25]:
            log(f"  {100 * n / max(total, 1):5.1f}%  {frame}")
    kept = Path(tempfile.gettempdir()) / "bench-runs-py-spy.txt"
    shutil.copy(out, kept)
    log(f"py-spy raw stacks kept in {kept}")

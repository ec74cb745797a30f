"""`agentos serve` as a child process of our own, for benchmarks that measure the control
plane from the outside (its CPU time, its answers) with agents in process sandboxes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness.ports import free_port
from harness.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "controlplane.cli.main"]


def process_cpu_seconds(pid: int) -> float:
    """CPU time of process `pid` so far (utime + stime of /proc/<pid>/stat, its own threads,
    not its children), seconds; OSError when it is gone."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent busy since boot (/proc/stat: all but
    idle and iowait), seconds."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class ServeProcess:
    """One `agentos serve` on `database_url` and `nats_url`, its state and log under `tmp`.

    `settings` are extra `AGENTOS_*` variables (e.g. {"AGENTOS_RUNTIME": "process"}); the
    caller's own `AGENTOS_*` variables are not inherited. `token` is a platform-admin API
    token made by `agentos token create` once the database is migrated."""

    def __init__(
        self, tmp: Path, database_url: str, nats_url: str, settings: dict[str, str]
    ) -> None:
        self.tmp = tmp
        self.state_dir = tmp / "state"
        self.log_path = tmp / "serve.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AGENTOS_")},
            "AGENTOS_DATABASE_URL": database_url,
            "AGENTOS_NATS_URL": nats_url,
            "AGENTOS_PORT": str(self.port),
            "AGENTOS_GRPC_PORT": "0",
            "AGENTOS_GATEWAY_PORT": str(free_port()),
            "AGENTOS_EGRESS_PROXY_PORT": str(free_port()),
            "AGENTOS_STATE_DIR": str(self.state_dir),
            **settings,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def create_token(self, principal: str = "bench") -> str:
        """A platform-admin token (kept in `self.token`)."""
        self.token = subprocess.run(
            [*CLI, "token", "create", "--principal", principal, "--platform-admin"],
            env=self.env, capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
        ).stdout.strip()  # fmt: skip
        return self.token

    def start(self, timeout_s: float = 60.0) -> None:
        """Start serve; return once /readyz answers 200 (AssertionError with the log's tail
        when it exits or does not within `timeout_s`)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            try:
                return httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout_s, "serve answering /readyz")

    @property
    def pid(self) -> int:
        assert self.proc is not None, "serve is not running"
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """The serve process's CPU time so far, seconds (`process_cpu_seconds`)."""
        return process_cpu_seconds(self.pid)

    def sandbox_pid(self, sandbox_id: str) -> int:
        """The pid of a process-runtime sandbox (its state folder's `pid` file)."""
        return int((self.state_dir / "process" / sandbox_id / "pid").read_text())

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def kill_sandboxes(self, command_contains: str) -> int:
        """SIGKILL every process-runtime sandbox still alive whose command line contains
        `command_contains` (its process group: the runtime starts each in its own session);
        returns how many there were."""
        killed = 0
        for pid_file in (self.state_dir / "process").glob("*/pid"):
            try:
                pid = int(pid_file.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                if command_contains in cmdline:
                    os.killpg(pid, signal.SIGKILL)
                    killed += 1
            except (OSError, ValueError):
                continue
        time.sleep(0.1)
        return killed

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text()[-chars:] if self.log_path.exists() else ""

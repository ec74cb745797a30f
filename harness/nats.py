"""A private nats-server with JetStream on free loopback ports, for tests and benchmarks that
stop and restart the broker or must not share the one of `make services`."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.ports import free_port, wait_until_port_open
from harness.services import ServiceMissing


class PrivateNats:
    """nats-server (Debian's, from `make services`) with JetStream; its store in `store`
    (default: a temporary folder removed on stop). `start()` returns once the client port
    listens."""

    def __init__(self, store: Path | None = None) -> None:
        self.port = free_port()
        self.monitor_port = free_port()
        self._own_store = store is None
        self.store = store if store is not None else Path(tempfile.mkdtemp(prefix="agentos-nats-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            raise ServiceMissing("nats-server is not installed: run `make services`")
        self.proc = subprocess.Popen(
            [
                *(binary, "-a", "127.0.0.1", "-p", str(self.port)),
                *("-m", str(self.monitor_port), "-js", "-sd", str(self.store)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_port_open(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None
        if self._own_store:
            shutil.rmtree(self.store, ignore_errors=True)

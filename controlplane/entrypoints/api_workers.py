"""REST worker processes of `agentos serve` (AGENTOS_API_WORKERS): several processes accept
on one port, as `uvicorn --workers` or gunicorn run an ASGI app, because one Python process
serves requests on one core.

The first worker is `agentos serve` itself (REST with the controller, relay, gateway and
gRPC it runs); each other worker is a child `agentos serve` with AGENTOS_COMPONENTS=api and
no gRPC, bound to the same port with SO_REUSEPORT (the kernel spreads connections over the
listeners). A child dies with its parent (PR_SET_PDEATHSIG) and is stopped by it (SIGTERM).
What a child serves reaches the controller by its poll of foreign writes, not by an
in-process notification; the rate limiter and the token cache are per process.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

WORKER_ENV = "AGENTOS_API_WORKER_CHILD"
"""Set in a child worker's environment: bind with SO_REUSEPORT, run REST only."""


def is_child() -> bool:
    """Whether this process is a child worker started by `start_children`."""
    return os.environ.get(WORKER_ENV) == "1"


def _die_with_parent() -> None:
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_children(count: int, host: str, port: int) -> list[subprocess.Popen[bytes]]:
    """`count` child workers of this `agentos serve`, on its settings, `host` and `port`."""
    env = {
        **os.environ,
        WORKER_ENV: "1",
        "AGENTOS_HOST": host,
        "AGENTOS_PORT": str(port),
        "AGENTOS_COMPONENTS": "api",
        "AGENTOS_API_WORKERS": "1",
        "AGENTOS_GRPC_PORT": "0",
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli.main", "serve"],
            env=env,
            preexec_fn=_die_with_parent,
        )
        for _ in range(count)
    ]


def stop_children(children: list[subprocess.Popen[bytes]], timeout_s: float = 10.0) -> None:
    """SIGTERM each child, then wait up to `timeout_s` for it (SIGKILL after)."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

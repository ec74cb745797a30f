"""Loopback ports: a free one, and waiting until one accepts connections."""

from __future__ import annotations

import socket

from harness.waiting import wait_until


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `host:port` accepts a TCP connection now."""
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def wait_until_port_open(port: int, timeout_s: float = 30.0) -> None:
    """Block until 127.0.0.1:`port` accepts connections; AssertionError after `timeout_s`."""
    wait_until(lambda: port_open(port), timeout_s, f"a listener on 127.0.0.1:{port}")

"""REST worker processes share one port (controlplane/entrypoints/api_workers.py)."""

from __future__ import annotations

import pytest

from controlplane.entrypoints import api_workers
from controlplane.entrypoints.serve import bind_sockets


def test_workers_bind_the_same_port_with_reuse_port() -> None:
    first = bind_sockets(["127.0.0.1"], 0, reuse_port=True)
    port = first[0].getsockname()[1]
    second = bind_sockets(["127.0.0.1"], port, reuse_port=True)
    try:
        assert second[0].getsockname()[1] == port
    finally:
        for sock in first + second:
            sock.close()


def test_a_port_without_reuse_port_is_not_shared() -> None:
    first = bind_sockets(["127.0.0.1"], 0)
    first[0].listen()
    try:
        with pytest.raises(OSError):
            bind_sockets(["127.0.0.1"], first[0].getsockname()[1], reuse_port=True)
    finally:
        first[0].close()


def test_a_child_worker_knows_it_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(api_workers.WORKER_ENV, raising=False)
    assert not api_workers.is_child()
    monkeypatch.setenv(api_workers.WORKER_ENV, "1")
    assert api_workers.is_child()

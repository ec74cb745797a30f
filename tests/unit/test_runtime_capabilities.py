"""Optional runtime capabilities: found by type, answered by a wrapper for its backend."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from lightkube import AsyncClient

from controlplane.runtimes.capabilities import Capabilities, capabilities
from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from controlplane.runtimes.instrumented import InstrumentedRuntime
from controlplane.runtimes.kubernetes.runtime import KubernetesRuntime
from controlplane.runtimes.process import ProcessRuntime


def test_a_backend_without_extras_has_no_capabilities(tmp_path: Path) -> None:
    assert capabilities(ProcessRuntime(tmp_path)) == Capabilities()


def test_containerd_can_exec_sweep_and_suspend_but_knows_no_nodes(tmp_path: Path) -> None:
    # No call is made: the channel opens on first use.
    backend = ContainerdRuntime(str(tmp_path / "no.sock"), "ns", state_dir=tmp_path)
    assert capabilities(backend) == Capabilities(
        exec=backend, sweeps=backend, folders=backend, suspends=backend
    )


def test_kubernetes_knows_its_nodes_and_watches_but_cannot_exec() -> None:
    backend = KubernetesRuntime(cast(AsyncClient, object()))  # informers start on first use
    assert capabilities(backend) == Capabilities(node_capacity=backend, watches=backend)


def test_an_instrumented_runtime_offers_its_backends_capabilities(tmp_path: Path) -> None:
    backend = ContainerdRuntime(str(tmp_path / "no.sock"), "ns", state_dir=tmp_path)
    wrapped = InstrumentedRuntime(backend)
    assert capabilities(wrapped).exec is backend
    assert not hasattr(wrapped, "exec")  # the port only; the rest through capabilities()

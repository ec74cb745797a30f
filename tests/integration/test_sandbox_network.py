"""Sandbox networking against the real containerd, runc, runsc, CNI plugins and nftables.

Reachability is checked from inside the sandbox: a Python probe (the python agent image) tries
each address and writes what it saw (open, refused, timeout, unreachable) to its /agentos
folder, which the host reads. Every "cannot" has a positive control: the same listener is
reached from the host, so a failure inside is the firewall's doing, not a dead listener.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from controlplane.runtimes.base import ProbeSpec, SandboxSpec
from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from harness.ports import free_port
from harness.waiting import eventually
from tests.conftest import service_setting

pytestmark = pytest.mark.containerd

DEADLINE_S = 30.0
BRIDGE_ADDRESS = "10.89.0.1"

# Tries each (host, port) of argv[1] (JSON) for 1.5 s; writes {"host:port": outcome}.
REACH = r"""
import errno, json, socket, sys
seen = {}
for host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=1.5).close()
        seen[f"{host}:{port}"] = "open"
    except socket.timeout:
        seen[f"{host}:{port}"] = "timeout"
    except ConnectionRefusedError:
        seen[f"{host}:{port}"] = "refused"
    except OSError as e:
        seen[f"{host}:{port}"] = errno.errorcode.get(e.errno, str(e))
with open(sys.argv[2], "w") as f:
    json.dump(seen, f)
"""
# Serves HTTP on $PORT (the python image has no httpd).
SERVE = (
    "import http.server as h, os; h.test(h.SimpleHTTPRequestHandler, port=int(os.environ['PORT']))"
)


@pytest.fixture(scope="module")
def settings() -> dict[str, str]:
    keys = {
        "CONTAINERD_ADDRESS": "containerd",
        "CONTAINERD_NAMESPACE": "containerd",
        "CONTAINERD_SNAPSHOTTER": "containerd",
        "AGENTOS_RUNC_RUNTIME": "containerd (runc)",
        "AGENTOS_RUNSC_RUNTIME": "containerd (gVisor)",
        "AGENTOS_PYTHON_IMAGE": "containerd python agent image",
        "AGENTOS_CNI_IPAM_DIR": "containerd (sandbox network)",
        "AGENTOS_DATABASE_URL": "postgres",
        "AGENTOS_NATS_URL": "nats",
    }
    return {key: service_setting(key, service) for key, service in keys.items()}


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    """The gateway's and the egress proxy's ports for this module's firewall."""
    return {"gateway": free_port(), "proxy": free_port()}


@pytest.fixture
async def runtime(
    settings: dict[str, str], ports: dict[str, int], tmp_path: Path
) -> AsyncIterator[ContainerdRuntime]:
    env = {
        **settings,
        "AGENTOS_SANDBOX_DIR": str(tmp_path / "sandboxes"),
        "AGENTOS_GATEWAY_PORT": str(ports["gateway"]),
        "AGENTOS_EGRESS_PROXY_PORT": str(ports["proxy"]),
    }
    rt = ContainerdRuntime.from_env(env)
    yield rt
    await rt.close()


NewSpec = Callable[..., SandboxSpec]


@pytest.fixture
async def new_spec(runtime: ContainerdRuntime, settings: dict[str, str]) -> AsyncIterator[NewSpec]:
    """A python sandbox serving HTTP on `port`; removed after the test."""
    created: list[str] = []

    def make(runtime_class: str, port: int) -> SandboxSpec:
        sandbox_id = f"net-{runtime_class}-{uuid.uuid4().hex[:10]}"
        created.append(sandbox_id)
        return SandboxSpec(
            sandbox_id=sandbox_id,
            agent_id=f"agent-{sandbox_id}",
            tenant="acme",
            name="net-agent",
            image=settings["AGENTOS_PYTHON_IMAGE"],
            runtime_class=runtime_class,
            command=["python3", "-c", SERVE],
            env={"PORT": str(port)},
            probe=ProbeSpec(http_port=port, http_path="/", timeout_s=2.0),
        )

    yield make
    for sandbox_id in created:
        await runtime.remove(sandbox_id)


async def _serve(host: str, port: int) -> asyncio.Server:
    async def answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"hello\n")
        await w.drain()
        w.close()

    return await asyncio.start_server(answer, host, port)


async def _reach(
    runtime: ContainerdRuntime, sandbox_id: str, targets: list[tuple[str, int]]
) -> dict[str, str]:
    """What the sandbox sees connecting to each target (see REACH)."""
    out = runtime.sandbox_dir(sandbox_id) / "agentos" / "reach.json"
    out.unlink(missing_ok=True)
    code = await runtime.exec(
        sandbox_id, ["python3", "-c", REACH, json.dumps(targets), "/agentos/reach.json"], 60
    )
    assert code == 0, f"the reach probe failed ({code})"
    seen: dict[str, str] = json.loads(out.read_text())
    return seen


async def _host_connects(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


async def _running(runtime: ContainerdRuntime, spec: SandboxSpec) -> str:
    await runtime.create(spec)
    await runtime.start(spec.sandbox_id)
    assert spec.probe is not None
    probe = spec.probe
    await eventually(lambda: runtime.probe(spec.sandbox_id, probe), DEADLINE_S, "ready")
    address = await runtime.sandbox_address(spec.sandbox_id)
    assert address is not None
    return address


@pytest.mark.parametrize("runtime_class", ["runc", "gvisor"])
async def test_a_sandbox_reaches_only_the_gateway_ports_on_the_host(
    runtime: ContainerdRuntime,
    new_spec: NewSpec,
    settings: dict[str, str],
    ports: dict[str, int],
    runtime_class: str,
) -> None:
    gateway = await _serve(BRIDGE_ADDRESS, ports["gateway"])
    other_port = free_port()
    anything = await _serve("0.0.0.0", other_port)  # what must stay unreachable
    try:
        spec = new_spec(runtime_class, free_port())
        address = await _running(runtime, spec)
        assert address.startswith("10.89."), address
        host_ip, outside = _default_route()
        # Positive controls: the listeners answer the host on those very addresses.
        assert await _host_connects(BRIDGE_ADDRESS, other_port)
        assert await _host_connects(host_ip, other_port)
        pg, nats = _port(settings["AGENTOS_DATABASE_URL"]), _port(settings["AGENTOS_NATS_URL"])
        seen = await _reach(
            runtime,
            spec.sandbox_id,
            [
                (BRIDGE_ADDRESS, ports["gateway"]),
                (BRIDGE_ADDRESS, other_port),
                (host_ip, other_port),
                (BRIDGE_ADDRESS, pg),
                (BRIDGE_ADDRESS, nats),
                ("127.0.0.1", pg),
                (outside, 80),
                ("1.1.1.1", 443),
            ],
        )
    finally:
        gateway.close()
        anything.close()
    assert seen.pop(f"{BRIDGE_ADDRESS}:{ports['gateway']}") == "open", seen
    # Dropped by the host firewall (a timeout, never an answer), or no route out at all.
    assert seen.pop(f"{BRIDGE_ADDRESS}:{other_port}") == "timeout", seen
    assert seen.pop(f"{host_ip}:{other_port}") == "timeout", seen
    assert seen.pop(f"{BRIDGE_ADDRESS}:{pg}") == "timeout", seen
    assert seen.pop(f"{BRIDGE_ADDRESS}:{nats}") == "timeout", seen
    # The sandbox's loopback is its own: the host's PostgreSQL is not there.
    assert seen.pop(f"127.0.0.1:{pg}") == "refused", seen
    assert "open" not in seen.values(), seen


def _default_route() -> tuple[str, str]:
    """The host's own address on its default route (not the bridge's), and that route's
    next hop (outside the host)."""
    out = subprocess.run(
        ["ip", "-j", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=True
    ).stdout
    route: dict[str, Any] = json.loads(out)[0]
    return str(route["prefsrc"]), str(route.get("gateway") or "1.1.1.1")


async def test_two_sandboxes_listen_on_one_port_and_cannot_reach_each_other(
    runtime: ContainerdRuntime, new_spec: NewSpec
) -> None:
    port = free_port()
    runc, gvisor = new_spec("runc", port), new_spec("gvisor", port)
    first, second = await asyncio.gather(_running(runtime, runc), _running(runtime, gvisor))
    assert first != second
    # Both answered their probe, from the host, each at its own address on the same port.
    assert await _host_connects(first, port)
    assert await _host_connects(second, port)
    # Their bridge ports are isolated: neither reaches the other.
    seen_by_runc = await _reach(runtime, runc.sandbox_id, [(second, port)])
    seen_by_gvisor = await _reach(runtime, gvisor.sandbox_id, [(first, port)])
    assert seen_by_runc[f"{second}:{port}"] != "open", seen_by_runc
    assert seen_by_gvisor[f"{first}:{port}"] != "open", seen_by_gvisor


def _host_state(runtime: ContainerdRuntime) -> tuple[set[str], set[str], int]:
    """The runtime's namespace files, its leases' sandbox ids and the bridge's veths."""
    assert runtime.network is not None
    net = runtime.network
    folder = net.settings.netns_dir / net.scope
    netns = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    prefix = f"{net.scope}."
    leases = {o[len(prefix) :] for o in net.leases().values() if o.startswith(prefix)}
    out = subprocess.run(
        ["ip", "-o", "link", "show", "master", net.settings.bridge],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return netns, leases, len(out.splitlines())


async def test_the_sweep_removes_what_no_sandbox_owns_and_keeps_the_rest(
    runtime: ContainerdRuntime, new_spec: NewSpec
) -> None:
    assert runtime.network is not None
    kept = new_spec("runc", free_port())
    await _running(runtime, kept)
    # What a crash between attaching and creating the container leaves: a namespace with
    # its veth, a lease and a firewall element, and no container.
    orphan = f"net-orphan-{uuid.uuid4().hex[:8]}"
    orphan_address = await runtime.network.attach(orphan)
    netns, leases, veths_before = _host_state(runtime)
    assert {kept.sandbox_id, orphan} <= netns
    assert {kept.sandbox_id, orphan} <= leases
    elements = await runtime.network.firewall.elements()
    assert elements[orphan_address] == f"{runtime.network.scope}/{orphan}"

    removed = await runtime.sweep(keep={kept.sandbox_id})

    assert removed >= 1
    netns, leases, veths_after = _host_state(runtime)
    assert orphan not in netns and orphan not in leases
    assert kept.sandbox_id in netns and kept.sandbox_id in leases
    assert veths_after == veths_before - 1
    elements = await runtime.network.firewall.elements()
    assert orphan_address not in elements
    assert f"{runtime.network.scope}/{kept.sandbox_id}" in elements.values()
    assert await runtime.probe(kept.sandbox_id, kept.probe or ProbeSpec())

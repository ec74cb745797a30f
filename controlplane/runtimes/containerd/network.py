"""Per-sandbox network namespaces on the bridge `agentos0` through CNI
(architecture/networking.md).

Each sandbox of a containerd namespace `scope` gets:
- a network namespace bind-mounted at `<netns_dir>/<scope>/<sandbox_id>` (the OCI spec joins
  it by path; runc and runsc both do);
- `eth0` on the bridge with an address from host-local IPAM (`bridge` plugin, `ipMasq: false`,
  a default route via the bridge's host address) and `lo` up (`loopback` plugin); the CNI
  container id is `<scope>.<sandbox_id>`, which is what host-local writes in its lease file;
- its bridge port (the host end of the veth pair) isolated (`bridge_slave isolated on`): an
  isolated port reaches the bridge's host address only, never another sandbox's port;
- its address in the firewall's set `sandboxes` (firewall.py).

`detach` undoes all three (CNI DEL releases the lease; removing the namespace removes the
veth pair); `sweep` detaches every sandbox of the scope that the caller does not keep, from
whatever is left of it (a namespace, a lease or a firewall element), which is what a crash
between steps leaves. IPAM state is host-wide (`ipam_dir`), shared by every runtime on the
bridge, so two runtimes never hand out one address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.runtimes.base import SandboxError
from controlplane.runtimes.containerd.cni import call_plugin, first_address
from controlplane.runtimes.containerd.firewall import Firewall

NETWORK_NAME = "agentos"
IFNAME = "eth0"


@dataclass(frozen=True)
class NetworkSettings:
    """Where sandboxes are attached: the bridge, its subnet (the bridge holds the first
    address), the CNI plugins' folder, host-local's lease folder, the namespaces' folder and
    the TCP ports of the bridge address that sandboxes may reach."""

    bridge: str = "agentos0"
    subnet: str = "10.89.0.0/16"
    cni_path: Path = Path("/usr/lib/cni")
    ipam_dir: Path = Path("/var/lib/agentos/cni")
    netns_dir: Path = Path("/run/agentos/netns")
    ports: tuple[int, ...] = field(default=(8091, 8092))

    @property
    def host_address(self) -> str:
        """The bridge's own address, the sandboxes' gateway (the subnet's first host)."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @classmethod
    def from_env(cls, env: dict[str, str]) -> NetworkSettings:
        """AGENTOS_SANDBOX_BRIDGE, AGENTOS_SANDBOX_SUBNET, AGENTOS_CNI_PATH,
        AGENTOS_CNI_IPAM_DIR, AGENTOS_NETNS_DIR; the ports are AGENTOS_GATEWAY_PORT (8091)
        and AGENTOS_EGRESS_PROXY_PORT (8092)."""
        d = cls()
        return cls(
            bridge=env.get("AGENTOS_SANDBOX_BRIDGE") or d.bridge,
            subnet=env.get("AGENTOS_SANDBOX_SUBNET") or d.subnet,
            cni_path=Path(env.get("AGENTOS_CNI_PATH") or d.cni_path),
            ipam_dir=Path(env.get("AGENTOS_CNI_IPAM_DIR") or d.ipam_dir),
            netns_dir=Path(env.get("AGENTOS_NETNS_DIR") or d.netns_dir),
            ports=(
                int(env.get("AGENTOS_GATEWAY_PORT") or 8091),
                int(env.get("AGENTOS_EGRESS_PROXY_PORT") or 8092),
            ),
        )


class SandboxNetwork:
    """Attach, detach and sweep the sandboxes of one containerd namespace (`scope`)."""

    def __init__(self, settings: NetworkSettings, scope: str) -> None:
        self.settings = settings
        self.scope = scope
        self.firewall = Firewall(settings.bridge, settings.host_address, settings.ports)
        self._bridge_ready = False
        self._lock = asyncio.Lock()

    def netns_path(self, sandbox_id: str) -> Path:
        """The sandbox's network namespace file (joined by the OCI spec)."""
        return self.settings.netns_dir / self.scope / sandbox_id

    def _container_id(self, sandbox_id: str) -> str:
        return f"{self.scope}.{sandbox_id}"

    def _bridge_config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "type": "bridge",
            "bridge": s.bridge,
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": False,
            "ipam": {
                "type": "host-local",
                "dataDir": str(s.ipam_dir),
                "ranges": [[{"subnet": s.subnet, "gateway": s.host_address}]],
                "routes": [{"dst": "0.0.0.0/0", "gw": s.host_address}],
            },
        }

    async def ensure_bridge(self) -> None:
        """The bridge with the host address, up, and the firewall (idempotent)."""
        async with self._lock:
            if self._bridge_ready:
                return
            s = self.settings
            prefix = ipaddress.ip_network(s.subnet).prefixlen
            await _ip("link", "add", "name", s.bridge, "type", "bridge", ok_if="File exists")
            await _ip("addr", "add", f"{s.host_address}/{prefix}", "dev", s.bridge, ok_if="already")
            await _ip("link", "set", s.bridge, "up")
            await self.firewall.ensure()
            self._bridge_ready = True

    async def attach(self, sandbox_id: str) -> str:
        """A new namespace, interfaces and firewall element for the sandbox; its address.

        Called before the sandbox's container exists, so whatever an earlier, interrupted
        attach left for this id is detached first (it may lack its firewall element or its
        port isolation). On failure whatever was made is undone. Raises SandboxError
        (NetworkUnavailable, NetworkError)."""
        await self.ensure_bridge()
        path = self.netns_path(sandbox_id)
        cid = self._container_id(sandbox_id)
        if _is_netns(path) or cid in self.leases().values():
            await self.detach(sandbox_id)  # detach removes the element before the namespace
        try:
            await _new_netns(path)
            # lo and eth0 are independent: both plugins run at once, and so do the port's
            # isolation and the firewall element once eth0 has its address.
            address, _ = await asyncio.gather(
                self._attach_eth0(sandbox_id, cid, path),
                call_plugin(self.settings.cni_path, _LOOPBACK, "ADD", cid, str(path), "lo"),
            )
        except BaseException:
            await self.detach(sandbox_id)
            raise
        return str(address)

    async def _attach_eth0(self, sandbox_id: str, cid: str, path: Path) -> str:
        config = self._bridge_config()
        result = await call_plugin(self.settings.cni_path, config, "ADD", cid, str(path), IFNAME)
        address = first_address(result)
        veth = _host_veth(result, self.settings.bridge)
        await asyncio.gather(
            _ip("link", "set", "dev", veth, "type", "bridge_slave", "isolated", "on"),
            self.firewall.allow(address, f"{self.scope}/{sandbox_id}"),
        )
        return address

    async def restore_address(self, sandbox_id: str, address: str) -> None:
        """Put the sandbox's address and default route back on its eth0 (idempotent): gVisor's
        network stack takes them off the namespace when it starts, and a restored sandbox reads
        them again (adr/0019-suspend-resume.md). Raises SandboxError("NetworkError")."""
        s = self.settings
        prefix = ipaddress.ip_network(s.subnet).prefixlen
        enter = ("nsenter", f"--net={self.netns_path(sandbox_id)}", "ip")
        await _run(*enter, "addr", "replace", f"{address}/{prefix}", "dev", IFNAME)
        await _run(*enter, "route", "replace", "default", "via", s.host_address)

    async def detach(self, sandbox_id: str) -> None:
        """Release the sandbox's address and firewall element, remove its namespace (and with
        it the veth pair). No error for what is already gone."""
        cid = self._container_id(sandbox_id)
        path = self.netns_path(sandbox_id)
        addresses = [ip for ip, owner in self.leases().items() if owner == cid]
        label = f"{self.scope}/{sandbox_id}"
        elements = await self.firewall.elements()
        addresses += [ip for ip, owner in elements.items() if owner == label]
        netns = str(path) if _is_netns(path) else ""
        if addresses or netns:
            config = self._bridge_config()
            await call_plugin(self.settings.cni_path, config, "DEL", cid, netns, IFNAME)
        await self.firewall.forget(addresses)
        await _remove_netns(path)

    async def sweep(self, keep: set[str]) -> int:
        """Detach every sandbox of this scope not in `keep` that left a namespace, a lease or
        a firewall element behind. Returns how many were detached."""
        found: set[str] = set()
        folder = self.settings.netns_dir / self.scope
        if folder.is_dir():
            found.update(p.name for p in folder.iterdir())
        prefix = f"{self.scope}."
        found.update(o[len(prefix) :] for o in self.leases().values() if o.startswith(prefix))
        label = f"{self.scope}/"
        elements = await self.firewall.elements()
        found.update(o[len(label) :] for o in elements.values() if o.startswith(label))
        gone = sorted(found - keep)
        for sandbox_id in gone:
            await self.detach(sandbox_id)
        return len(gone)

    def leases(self) -> dict[str, str]:
        """host-local's leases on our network: address → CNI container id."""
        folder = self.settings.ipam_dir / NETWORK_NAME
        found: dict[str, str] = {}
        if not folder.is_dir():
            return found
        for entry in folder.iterdir():
            try:
                ipaddress.ip_address(entry.name)
                found[entry.name] = entry.read_text().splitlines()[0].strip()
            except (ValueError, IndexError, OSError):
                continue  # last_reserved_ip.0, lock, or a lease being written
        return found


_LOOPBACK = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}


def _host_veth(result: dict[str, Any], bridge: str) -> str:
    """The host end of the sandbox's veth pair in a bridge plugin's ADD result."""
    for interface in result.get("interfaces") or []:
        if not interface.get("sandbox") and interface.get("name") != bridge:
            return str(interface["name"])
    raise SandboxError("NetworkError", f"CNI result names no host veth: {result}")


def _is_netns(path: Path) -> bool:
    """True if `path` is a mounted namespace (its device differs from its folder's)."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except FileNotFoundError:
        return False


async def _new_netns(path: Path) -> None:
    """A new network namespace kept by a bind mount at `path` (unshare --net=FILE)."""
    if _is_netns(path):
        return
    await asyncio.to_thread(_touch, path)
    await _run("unshare", f"--net={path}", "true")


async def _remove_netns(path: Path) -> None:
    if _is_netns(path):
        await _run("umount", str(path))
    await asyncio.to_thread(path.unlink, True)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


async def _ip(*args: str, ok_if: str = "") -> None:
    await _run("ip", *args, ok_if=ok_if)


async def _run(*argv: str, ok_if: str = "") -> None:
    """Run a host tool; SandboxError("NetworkError") on failure unless stderr has `ok_if`."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
    except FileNotFoundError:
        raise SandboxError("NetworkUnavailable", f"{argv[0]} is not installed") from None
    _, err = await proc.communicate()
    message = err.decode(errors="replace").strip()
    if proc.returncode != 0 and not (ok_if and ok_if in message):
        raise SandboxError("NetworkError", f"{' '.join(argv)}: {message}")

"""The host firewall of the sandbox bridge: the nftables table `inet agentos`.

From the bridge the host accepts only the agent gateway's and the egress proxy's ports on the
bridge's own address, and only from a known sandbox address (the set `sandboxes`, one element
per sandbox with its id as the element's comment); replies to connections the host opened
(its readiness probes) pass; everything else from the bridge to the host and all forwarding
through the host is dropped. (Traffic between sandboxes never reaches these hooks: their
bridge ports are isolated, network.py.) The rules are in
the host's namespace because gVisor's network stack writes raw packets that rules inside the
sandbox's namespace would never see (architecture/networking.md).

Applied with the `nft` command (Debian's nftables): each call is one atomic transaction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from controlplane.runtimes.base import SandboxError

TABLE = "agentos"
NFT_TIMEOUT_S = 15.0


class Firewall:
    """The rules for bridge `bridge` whose host address is `host_address`; `ports` are the
    TCP ports sandboxes may reach there (the gateway's, the egress proxy's)."""

    def __init__(self, bridge: str, host_address: str, ports: Iterable[int], nft: str = "nft"):
        self.bridge = bridge
        self.host_address = host_address
        self.ports = sorted(set(ports))
        self.nft = nft
        self._ensured = False

    def ruleset(self) -> str:
        """The nft script that (re)creates the chains; set elements are kept."""
        b, inet = self.bridge, f"inet {TABLE}"
        ports = ", ".join(str(p) for p in self.ports)
        lines = [
            f"add table {inet}",
            f"add set {inet} sandboxes {{ type ipv4_addr; }}",
            f"add set {inet} gateway_ports {{ type inet_service; }}",
            *([f"add element {inet} gateway_ports {{ {ports} }}"] if ports else []),
            f"add chain {inet} input {{ type filter hook input priority -10; policy accept; }}",
            f"flush chain {inet} input",
            f'add rule {inet} input iifname "{b}" ct state established,related accept',
            f'add rule {inet} input iifname "{b}" ip saddr @sandboxes '
            f"ip daddr {self.host_address} tcp dport @gateway_ports accept",
            f'add rule {inet} input iifname "{b}" counter drop',
            f"add chain {inet} forward {{ type filter hook forward priority -10; policy accept; }}",
            f"flush chain {inet} forward",
            f'add rule {inet} forward iifname "{b}" counter drop',
            f'add rule {inet} forward oifname "{b}" counter drop',
        ]
        return "\n".join(lines) + "\n"

    async def ensure(self) -> None:
        """Create or refresh the tables and chains (once per process; idempotent)."""
        if self._ensured:
            return
        await self._run(["-f", "-"], self.ruleset())
        self._ensured = True

    async def allow(self, address: str, sandbox: str) -> None:
        """Add sandbox address `address`, labelled `sandbox`, to the set `sandboxes`."""
        await self.ensure()
        element = f'{{ {address} comment "{_comment(sandbox)}" }}'
        await self._run(["-f", "-"], f"add element inet {TABLE} sandboxes {element}\n")

    async def forget(self, addresses: Iterable[str]) -> None:
        """Remove `addresses` from the set `sandboxes` (absent ones are ignored)."""
        current = await self.elements()
        gone = sorted({a for a in addresses if a in current})
        if gone:
            script = f"delete element inet {TABLE} sandboxes {{ {', '.join(gone)} }}\n"
            await self._run(["-f", "-"], script)

    async def elements(self) -> dict[str, str]:
        """The set `sandboxes`: address → the sandbox label it was added with ({} if none)."""
        try:
            out = await self._run(["-j", "list", "set", "inet", TABLE, "sandboxes"], "")
        except SandboxError:
            return {}  # no table yet
        found: dict[str, str] = {}
        for item in json.loads(out).get("nftables", []):
            for elem in (item.get("set") or {}).get("elem", []):
                found.update([_element(elem)])
        return found

    async def _run(self, args: list[str], stdin: str) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.nft,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            raise SandboxError("NetworkUnavailable", "nft (nftables) is not installed") from None
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), NFT_TIMEOUT_S)
        if proc.returncode != 0:
            raise SandboxError("NetworkError", f"nft {' '.join(args)}: {err.decode().strip()}")
        return out.decode()


def _comment(sandbox: str) -> str:
    """An nft comment (at most 128 bytes, no quotes)."""
    return sandbox.replace('"', "")[:128]


def _element(elem: Any) -> tuple[str, str]:
    """(address, comment) of one element of `nft -j list set` output."""
    if isinstance(elem, dict) and "elem" in elem:
        inner = elem["elem"]
        return str(inner.get("val")), str(inner.get("comment", ""))
    return str(elem), ""

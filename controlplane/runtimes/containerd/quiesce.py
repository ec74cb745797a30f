"""Quiet a sandbox's TCP before a gVisor checkpoint (adr/0019-suspend-resume.md).

runsc refuses to checkpoint while any TCP endpoint exists in the sandbox, TIME_WAIT included.
So the host closes them first, from its side: new connections from the sandbox's address are
refused with a TCP reset (the nftables table `inet sandbox_quiesce`, set `paused`), then the
host's own sockets to that address (the agent's long poll to the gateway, keep-alive
connections, a probe) are destroyed with `ss -K`, which resets the sandbox's ends: an
endpoint that receives a reset is gone at once, with no TIME_WAIT. The agent's SDK sees a
transport error and retries with backoff; after the restore the address is unpaused and its
retry connects. A table of its own, so the sandbox firewall's refresh (firewall.py flushes its
chains) never drops the rule.
"""

from __future__ import annotations

import asyncio

from controlplane.runtimes.base import SandboxError

TABLE = "sandbox_quiesce"
TOOL_TIMEOUT_S = 15.0


class Quiesce:
    """Pause and reset the TCP of sandbox addresses on bridge `bridge`."""

    def __init__(self, bridge: str) -> None:
        self.bridge = bridge
        self._ensured = False

    def ruleset(self) -> str:
        inet = f"inet {TABLE}"
        return (
            f"add table {inet}\n"
            f"add set {inet} paused {{ type ipv4_addr; }}\n"
            f"add chain {inet} input {{ type filter hook input priority -20; policy accept; }}\n"
            f"flush chain {inet} input\n"
            f'add rule {inet} input iifname "{self.bridge}" ip saddr @paused '
            "meta l4proto tcp ct state new reject with tcp reset\n"
        )

    async def pause(self, address: str | None) -> None:
        """From now on `address` opens no TCP connection to the host, and has none left (no-op
        for None). Raises SandboxError (NetworkUnavailable, NetworkError)."""
        if not address:
            return
        if not self._ensured:
            await _run("nft", "-f", "-", stdin=self.ruleset())
            self._ensured = True
        await _run("nft", "-f", "-", stdin=f"add element inet {TABLE} paused {{ {address} }}\n")
        await _run("ss", "-K", "-t", "dst", address)

    async def unpause(self, address: str | None) -> None:
        """`address` may connect again (idempotent; no-op for None)."""
        if not address:
            return
        script = f"delete element inet {TABLE} paused {{ {address} }}\n"
        await _run("nft", "-f", "-", stdin=script, ok_if="No such file")


async def _run(*argv: str, stdin: str = "", ok_if: str = "") -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise SandboxError("NetworkUnavailable", f"{argv[0]} is not installed") from None
    _, err = await asyncio.wait_for(proc.communicate(stdin.encode()), TOOL_TIMEOUT_S)
    message = err.decode(errors="replace").strip()
    if proc.returncode != 0 and not (ok_if and ok_if in message):
        raise SandboxError("NetworkError", f"{' '.join(argv)}: {message}")

"""The benchmark baseline's sandbox networking, done by hand as a `ctr run` user would: a
network namespace from `unshare --net=FILE`, then the CNI `bridge` and `loopback` plugins
executed directly with their config on stdin (the same bridge, subnet and host-local lease
folder as the runtime's, so the two never hand out one address). No firewall element and no
port isolation: those are what Agent OS adds, and what the comparison charges it for."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from controlplane.runtimes.containerd.network import NetworkSettings


class RawCni:
    """Namespaces under `folder`; plugins, bridge and leases from `settings`."""

    def __init__(self, settings: NetworkSettings, folder: Path) -> None:
        self.settings = settings
        self.folder = folder
        self.config = {
            "cniVersion": "1.0.0",
            "name": "agentos",
            "type": "bridge",
            "bridge": settings.bridge,
            "isGateway": True,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "dataDir": str(settings.ipam_dir),
                "ranges": [[{"subnet": settings.subnet, "gateway": settings.host_address}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }

    async def attach(self, cid: str) -> tuple[str, str]:
        """(namespace file, address) of a new namespace for container `cid`."""
        path = self.folder / cid
        self.folder.mkdir(parents=True, exist_ok=True)
        path.touch()
        await _run(["unshare", f"--net={path}", "true"], None, {})
        out = await self._plugin("bridge", self.config, "ADD", cid, str(path), "eth0")
        lo = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
        await self._plugin("loopback", lo, "ADD", cid, str(path), "lo")
        address = json.loads(out)["ips"][0]["address"].split("/")[0]
        return str(path), address

    async def detach(self, cid: str) -> None:
        path = self.folder / cid
        await self._plugin("bridge", self.config, "DEL", cid, str(path), "eth0")
        await _run(["umount", str(path)], None, {}, check=False)
        path.unlink(missing_ok=True)

    async def _plugin(
        self, name: str, config: dict[str, object], command: str, cid: str, netns: str, ifname: str
    ) -> bytes:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_PATH": str(self.settings.cni_path),
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin"),
        }
        plugin = str(self.settings.cni_path / name)
        return await _run([plugin], json.dumps(config).encode(), env)


async def _run(
    argv: list[str], stdin: bytes | None, env: dict[str, str], check: bool = True
) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or None,
    )
    out, err = await proc.communicate(stdin)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {(out or err).decode().strip()}")
    return out

"""Calling CNI plugins as the CNI specification (1.0.0) prescribes.

A plugin is an executable in `CNI_PATH`; the runtime runs it with the operation in the
environment (`CNI_COMMAND` ADD | DEL | CHECK, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
`CNI_PATH`) and the network configuration as JSON on stdin. ADD prints a result
(`ips[].address` as CIDR, `interfaces`, `routes`); an error is a JSON object with `code` and
`msg` on stdout and a non-zero exit. No maintained Python CNI library exists; containerd's CRI
plugin (go-cni) and nerdctl execute the plugins the same way (architecture/networking.md).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from controlplane.runtimes.base import SandboxError

CNI_VERSION = "1.0.0"
PLUGIN_TIMEOUT_S = 30.0


async def call_plugin(
    cni_path: Path,
    config: dict[str, Any],
    command: str,
    container_id: str,
    netns: str,
    ifname: str,
) -> dict[str, Any]:
    """Run the plugin `config["type"]` with `command` (ADD, DEL, CHECK); its result (ADD) or {}.

    `netns` is the path of the network namespace ("" for a DEL whose namespace is gone, as
    the spec allows). Raises SandboxError("NetworkError") with the plugin's `msg` on failure
    and ("NetworkUnavailable") when the plugin binary is missing.
    """
    plugin = cni_path / str(config["type"])
    if not plugin.is_file():
        raise SandboxError("NetworkUnavailable", f"CNI plugin {plugin} is not installed")
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": str(cni_path),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }
    proc = await asyncio.create_subprocess_exec(
        str(plugin),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(json.dumps(config).encode()), PLUGIN_TIMEOUT_S
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SandboxError("NetworkError", f"CNI {config['type']} {command} timed out") from None
    if proc.returncode != 0:
        raise SandboxError("NetworkError", f"CNI {config['type']} {command}: {_message(out, err)}")
    if command != "ADD" or not out.strip():
        return {}
    result: dict[str, Any] = json.loads(out)
    return result


def _message(out: bytes, err: bytes) -> str:
    """The plugin's error `msg` (and `details`), else its stderr."""
    try:
        body = json.loads(out)
    except ValueError:
        return (err or out).decode(errors="replace").strip()[:500]
    msg = f"{body.get('msg', '')} {body.get('details', '')}".strip()
    return msg or str(body)[:500]


def first_address(result: dict[str, Any]) -> str:
    """The first IPv4 address of an ADD result, without its prefix length.
    Raises SandboxError("NetworkError") if the result has none."""
    for ip in result.get("ips") or []:
        address = str(ip.get("address", "")).partition("/")[0]
        if address and ":" not in address:
            return address
    raise SandboxError("NetworkError", f"CNI result has no IPv4 address: {result}")

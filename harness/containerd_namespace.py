"""A containerd namespace of its own with the python agent image built from the current
sources, for tests and benchmarks whose controller must not meet another's sandboxes (a
controller removes every managed sandbox of its namespace that its database does not know).

    async with private_namespace(address, snapshotter, tmp) as (namespace, ref):
        ...  # ContainerdRuntime(address, namespace, ...) runs `ref`

The image is `hack/build-agent-image.py --python` (the SDK and examples/agents as they are
in this tree) under the reference `REF`; the namespace and what it holds are removed at the
end. Requires `ctr` on the PATH and the .debs cache `make services` fills.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = "localhost/agentos/python-agent:tree"
# The .debs `make services` fetched (AGENTOS_SERVICES_DIR: the checkout that ran it).
DEBS = Path(os.environ.get("AGENTOS_SERVICES_DIR") or ROOT / ".services") / "cache" / "debs"


def build_python_image(out: Path, ref: str = REF, cache_dir: Path = DEBS) -> None:
    """Build the python agent image archive from this tree to `out` (about 20 s)."""
    builder = ROOT / "hack" / "build-agent-image.py"
    command = [sys.executable, str(builder), str(out), "--python", "--ref", ref]
    subprocess.run([*command, "--cache-dir", str(cache_dir)], check=True, capture_output=True)


async def ctr(address: str, namespace: str, *args: str, check: bool = True) -> str:
    """`ctr` in `namespace`: its stdout. Raises RuntimeError when it fails and `check`."""
    proc = await asyncio.create_subprocess_exec(
        "ctr", "--address", address, "--namespace", namespace, *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if check and proc.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)}: {out.decode(errors='replace')}")
    return out.decode(errors="replace")


@contextlib.asynccontextmanager
async def private_namespace(
    address: str, snapshotter: str, tmp: Path, *, cache_dir: Path = DEBS
) -> AsyncIterator[tuple[str, str]]:
    """A new namespace `agentos-warm-<hex>` holding the image `REF`: (namespace, REF).
    Containers left in it are the caller's to remove first (through the runtime)."""
    namespace = f"agentos-warm-{uuid.uuid4().hex[:8]}"
    archive = tmp / "python-agent.tar"
    await asyncio.to_thread(build_python_image, archive, REF, cache_dir)
    await ctr(address, namespace, "images", "import", "--snapshotter", snapshotter, str(archive))
    try:
        yield namespace, REF
    finally:
        await ctr(address, namespace, "images", "rm", "--sync", REF, check=False)
        for _ in range(20):  # snapshots go with containerd's garbage collection
            try:
                await ctr(address, namespace, "namespaces", "rm", namespace)
                break
            except RuntimeError:
                await asyncio.sleep(0.5)

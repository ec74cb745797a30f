"""The checked-in containerd API stubs are exactly what `make proto-containerd` generates.

Regenerates them from controlplane/runtimes/containerd/api/proto/*.proto into a temporary
folder and compares byte for byte, so a hand edit or a forgotten regeneration fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

API_DIR = Path(__file__).resolve().parents[2] / "controlplane" / "runtimes" / "containerd" / "api"
GENERATOR = API_DIR / "proto" / "generate.py"


def _generated(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in folder.iterdir()
        if p.is_file() and p.name.startswith("containerd_") and "_pb2" in p.name
    }


def test_generated_stubs_match_the_proto_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    fresh = _generated(tmp_path)
    checked_in = _generated(API_DIR)
    protos = sorted(p.stem for p in (API_DIR / "proto").glob("*.proto"))
    assert protos, "no .proto files"
    for stem in protos:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert f"{stem}{suffix}" in fresh, f"the generator wrote no {stem}{suffix}"
    assert sorted(checked_in) == sorted(fresh), (
        "stale or missing generated files: run make proto-containerd"
    )
    for name, data in fresh.items():
        assert checked_in[name] == data, (
            f"{name} differs from its .proto: run make proto-containerd"
        )

"""The checked-in gRPC API stubs are exactly what `make proto-api` generates from
proto/agentos/, so a hand edit or a forgotten regeneration fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "controlplane" / "api" / "grpc" / "gen"


def _stubs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if "_pb2" in p.name}


def test_generated_stubs_match_the_proto_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh, checked_in = _stubs(tmp_path), _stubs(GEN)
    assert {"agent_service_pb2.py", "agent_service_pb2_grpc.py"} <= set(fresh)
    assert sorted(checked_in) == sorted(fresh), "stale or missing stubs: run make proto-api"
    for name, data in fresh.items():
        assert checked_in[name] == data, f"{name} differs from its .proto: run make proto-api"

"""Generate the Python stubs of our containerd API subset (`make proto-containerd`).

    python controlplane/runtimes/containerd/api/proto/generate.py [--out DIR]

Runs grpcio-tools' protoc on every `*.proto` next to this file and writes `NAME_pb2.py`,
`NAME_pb2.pyi` and `NAME_pb2_grpc.py` into DIR (default: `controlplane/runtimes/containerd/api`,
the parent folder). protoc writes absolute imports between generated modules
(`import containerd_types_pb2 as ...`); they are rewritten to package-relative ones
(`from . import containerd_types_pb2 as ...`) so the stubs live inside our package.

The output is checked in; tests/unit/test_containerd_proto_in_sync.py regenerates it into a
temporary folder and compares, so edit the .proto files and rerun this, never the output.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import resources
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_DIR.parent

# `import containerd_x_pb2 as y` (and `..._pb2_grpc`) at the start of a line: our own modules.
_LOCAL_IMPORT = re.compile(r"^import (containerd_\w+_pb2(?:_grpc)?)( as \w+)?$", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Write the stubs into `out`; return the files written (sorted)."""
    from grpc_tools import protoc  # dev dependency (grpcio-tools)

    out.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(p.name for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")
    written = sorted(
        p for p in out.iterdir() if p.name.startswith("containerd_") and "_pb2" in p.name
    )
    for path in written:
        text = path.read_text()
        fixed = _LOCAL_IMPORT.sub(lambda m: f"from . import {m[1]}{m[2] or ''}", text)
        if fixed != text:
            path.write_text(fixed)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

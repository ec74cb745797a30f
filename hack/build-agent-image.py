#!/usr/bin/env python3
"""Build the example agent OCI image from Debian packages; nothing is pulled from a registry.

    hack/build-agent-image.py OUT.tar [--cache-dir DIR] [--ref NAME:TAG]

The image holds busybox (from Debian's `busybox-static`, fetched with `apt-get download`) and
`/agent/run.sh`, which serves HTTP readiness on $AGENT_PORT (default 8080) with
`busybox httpd`; `GET /healthz` answers 200. It runs as the non-root user 65532.

The output is an OCI image layout in a tar (oci-layout, index.json, blobs/sha256/...), as
`ctr images import` reads it. It is deterministic: fixed mtimes, owners and entry order, and a
gzip header without a timestamp, so the same busybox gives the same digests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REF = "localhost/agentos/example-agent:0.1.0"
DEFAULT_CACHE = ROOT / ".services" / "cache" / "debs"
PACKAGE = "busybox-static"
# 1980-01-01T00:00:00Z, the usual reproducible-build epoch (zip cannot go lower).
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
AGENT_UID = 65532

RUN_SH = """\
#!/bin/sh
# Example agent: serves HTTP readiness on $AGENT_PORT (default 8080); GET /healthz answers 200.
set -eu
port="${AGENT_PORT:-8080}"
echo "example-agent: serving /healthz on :${port} as uid $(id -u)"
exec /bin/busybox httpd -f -v -p "${port}" -h /agent/www
"""

# /etc/passwd: root, the agent user (65532) and nobody.
USERS = """\
root:x:0:0:root:/root:/bin/sh
agent:x:65532:65532:agent:/home/agent:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """\
root:x:0:
agent:x:65532:
nogroup:x:65534:
"""

# Mount points and writable places; (path, mode, uid).
DIRS = [
    ("agent", 0o755, 0),
    ("agent/www", 0o755, 0),
    ("bin", 0o755, 0),
    ("dev", 0o755, 0),
    ("etc", 0o755, 0),
    ("home", 0o755, 0),
    ("home/agent", 0o755, AGENT_UID),
    ("proc", 0o555, 0),
    ("root", 0o700, 0),
    ("sbin", 0o755, 0),
    ("sys", 0o555, 0),
    ("tmp", 0o1777, 0),
    ("usr", 0o755, 0),
    ("usr/bin", 0o755, 0),
    ("usr/sbin", 0o755, 0),
    ("var", 0o755, 0),
]


def log(msg: str) -> None:
    print(f"[build-agent-image] {msg}", file=sys.stderr)


def oci_arch() -> str:
    deb_arch = subprocess.run(
        ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return {"armhf": "arm", "i386": "386", "ppc64el": "ppc64le"}.get(deb_arch, deb_arch)


def fetch_deb(cache_dir: Path) -> Path:
    """The busybox-static .deb in cache_dir, downloaded with `apt-get download` if missing."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache_dir.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        log(f"apt-get download {PACKAGE} into {cache_dir}")
        # Sandbox user root: the cache dir is not readable by _apt; apt would only warn.
        download = ["apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", PACKAGE]
        if subprocess.run(download, cwd=cache_dir, check=False).returncode != 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(download, cwd=cache_dir, check=True)
        debs = sorted(cache_dir.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise SystemExit(f"apt-get download {PACKAGE} left no .deb in {cache_dir}")
    return debs[-1]


def extract_busybox(deb: Path, workdir: Path) -> tuple[bytes, list[str]]:
    """busybox's bytes and its applets' install paths (e.g. 'bin/sh', 'usr/bin/env')."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir)], check=True)
    busybox = workdir / "bin" / "busybox"
    if not busybox.is_file():
        raise SystemExit(f"{deb} has no /bin/busybox")
    applets = subprocess.run(
        [str(busybox), "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    return busybox.read_bytes(), sorted(set(applets))


def _info(name: str, kind: bytes, mode: int, uid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = info.gid = uid
    info.uname = info.gname = ""
    info.mtime = EPOCH
    return info


def layer_tar(busybox: bytes, applets: list[str]) -> bytes:
    """The rootfs as an uncompressed tar, entries sorted, owners and mtimes fixed."""
    files: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    for path, mode, uid in DIRS:
        files[path] = (_info(path, tarfile.DIRTYPE, mode, uid), None)

    def add_file(path: str, data: bytes, mode: int) -> None:
        info = _info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        files[path] = (info, data)

    add_file("bin/busybox", busybox, 0o755)
    add_file("agent/run.sh", RUN_SH.encode(), 0o755)
    add_file("agent/www/healthz", b"ok\n", 0o644)
    add_file("agent/www/index.html", b"example-agent\n", 0o644)
    add_file("etc/passwd", USERS.encode(), 0o644)
    add_file("etc/group", GROUP.encode(), 0o644)
    add_file("etc/hostname", b"example-agent\n", 0o644)
    for applet in applets:
        applet = applet.lstrip("/")
        if applet == "bin/busybox" or applet.split("/")[0] not in {"bin", "sbin", "usr"}:
            continue
        link = _info(applet, tarfile.SYMTYPE, 0o777)
        link.linkname = "/bin/busybox"
        files[applet] = (link, None)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            info, data = files[path]
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build(out: Path, cache_dir: Path, ref: str) -> str:
    """Write the OCI layout tar to `out`; return the manifest digest."""
    deb = fetch_deb(cache_dir)
    with tempfile.TemporaryDirectory(prefix="agent-image-") as tmp:
        busybox, applets = extract_busybox(deb, Path(tmp))
    layer = layer_tar(busybox, applets)
    layer_gz = gzip_bytes(layer)
    arch = oci_arch()
    created = dt.datetime.fromtimestamp(EPOCH, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {
            "User": f"{AGENT_UID}:{AGENT_UID}",
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": ["/agent/run.sh"],
            "WorkingDir": "/agent",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {
                "org.opencontainers.image.title": "agentos example agent",
                "org.opencontainers.image.source.package": deb.name,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
        "history": [
            {"created": created, "created_by": f"hack/build-agent-image.py from {deb.name}"}
        ],
    }
    config_bytes = canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest(layer_gz),
                "size": len(layer_gz),
            }
        ],
    }
    manifest_bytes = canonical_json(manifest)
    manifest_digest = digest(manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": arch, "os": "linux"},
                # ref.name carries the full reference: `ctr images import` keeps a
                # fully qualified name as is; io.containerd.image.name says the same.
                "annotations": {
                    "org.opencontainers.image.ref.name": ref,
                    "io.containerd.image.name": ref,
                },
            }
        ],
    }
    entries: list[tuple[str, bytes]] = [
        ("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"})),
        ("index.json", canonical_json(index)),
    ]
    for blob in sorted({config_bytes, layer_gz, manifest_bytes}, key=digest):
        entries.append((f"blobs/sha256/{digest(blob).removeprefix('sha256:')}", blob))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp_out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in ("blobs", "blobs/sha256"):
            tar.addfile(_info(path, tarfile.DIRTYPE, 0o755))
        for path, data in entries:
            info = _info(path, tarfile.REGTYPE, 0o644)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tmp_out.replace(out)
    return manifest_digest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="path of the OCI image layout tar to write")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where .debs go")
    parser.add_argument("--ref", default=DEFAULT_REF, help="image reference to tag")
    args = parser.parse_args()
    manifest_digest = build(args.out, args.cache_dir, args.ref)
    log(f"wrote {args.out}: {args.ref} @ {manifest_digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

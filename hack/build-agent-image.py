#!/usr/bin/env python3
"""Build the example agent OCI images from Debian packages; nothing is pulled from a registry.

    hack/build-agent-image.py OUT.tar [--python] [--cache-dir DIR] [--ref NAME:TAG]

The default image holds busybox (from Debian's `busybox-static`, fetched with `apt-get
download`) and `/agent/run.sh`, which serves HTTP readiness on $AGENT_PORT (default 8080) with
`busybox httpd`; `GET /healthz` answers 200.

`--python` builds `localhost/agentos/python-agent:0.1.0` instead: Debian's python3.11
(python3.11-minimal, libpython3.11-minimal, libpython3.11-stdlib and the libraries they
depend on, resolved with `apt-cache depends`; see PYTHON_SKIP for what is left out and why),
unpacked with `dpkg-deb -x` (no maintainer scripts run), the SDK (sdk/python/agentos_sdk) in
/usr/lib/python3/dist-packages, and the example agents (examples/agents/*.py) under /agent.
Its entrypoint is `python3 /agent/tool_agent.py`; `$AGENTOS_WORK_DIR` is /home/agent/work.

Both run as the non-root user 65532. The output is an OCI image layout in a tar (oci-layout,
index.json, blobs/sha256/...), as `ctr images import` reads it. It is deterministic: fixed
mtimes, owners and entry order, and a gzip header without a timestamp, so the same packages
(and sources) give the same digests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REF = "localhost/agentos/example-agent:0.1.0"
DEFAULT_CACHE = ROOT / ".services" / "cache" / "debs"
PACKAGE = "busybox-static"
# 1980-01-01T00:00:00Z, the usual reproducible-build epoch (zip cannot go lower).
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
AGENT_UID = 65532

PYTHON_REF = "localhost/agentos/python-agent:0.1.0"
PYTHON_ROOTS = ["python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib"]
# Dependencies left out: each serves only a stdlib extension module an agent does without
# (_dbm, _curses, readline, nis; those modules fail to import), and libtirpc3 alone would
# pull in Kerberos. Everything else apt-cache depends names (recursively) goes in.
PYTHON_SKIP = frozenset(
    {"libdb5.3", "libncursesw6", "libtinfo6", "libreadline8", "libnsl2", "libtirpc3"}
)
# Parts of the packages no program reads.
PYTHON_DROP = ("usr/share/doc/", "usr/share/man/", "usr/share/lintian/", "usr/share/binfmts/")
SDK_DIR = ROOT / "sdk" / "python" / "agentos_sdk"
EXAMPLES_DIR = ROOT / "examples" / "agents"
SITE_PACKAGES = "usr/lib/python3/dist-packages"

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


def fetch_debs(cache_dir: Path, packages: list[str]) -> list[Path]:
    """The .deb of each package in cache_dir, downloaded with `apt-get download` if missing."""
    cache_dir.mkdir(parents=True, exist_ok=True)

    def cached(package: str) -> list[Path]:
        return sorted(cache_dir.glob(f"{package}_*.deb"))

    missing = [package for package in packages if not cached(package)]
    if missing:
        log(f"apt-get download {' '.join(missing)} into {cache_dir}")
        # Sandbox user root: the cache dir is not readable by _apt; apt would only warn.
        download = ["apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", *missing]
        if subprocess.run(download, cwd=cache_dir, check=False).returncode != 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(download, cwd=cache_dir, check=True)
    debs = []
    for package in packages:
        found = cached(package)
        if not found:
            raise SystemExit(f"apt-get download {package} left no .deb in {cache_dir}")
        debs.append(found[-1])
    return debs


def fetch_deb(cache_dir: Path) -> Path:
    """The busybox-static .deb in cache_dir, downloaded with `apt-get download` if missing."""
    return fetch_debs(cache_dir, [PACKAGE])[0]


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

    return tar_of(files)


Entries = dict[str, tuple[tarfile.TarInfo, bytes | None]]


def tar_of(files: Entries) -> bytes:
    """An uncompressed tar of `files` (path → header, data), entries in path order."""
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
    """Write the busybox image's OCI layout tar to `out`; return the manifest digest."""
    deb = fetch_deb(cache_dir)
    with tempfile.TemporaryDirectory(prefix="agent-image-") as tmp:
        busybox, applets = extract_busybox(deb, Path(tmp))
    process = {
        "User": f"{AGENT_UID}:{AGENT_UID}",
        "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "Entrypoint": ["/agent/run.sh"],
        "WorkingDir": "/agent",
        "ExposedPorts": {"8080/tcp": {}},
        "Labels": {
            "org.opencontainers.image.title": "agentos example agent",
            "org.opencontainers.image.source.package": deb.name,
        },
    }
    return write_archive(out, ref, layer_tar(busybox, applets), process, deb.name)


def write_archive(
    out: Path, ref: str, layer: bytes, process: Mapping[str, object], built_from: str
) -> str:
    """Write an OCI layout tar of one layer and its image config; return the manifest digest.

    `process`: the config's `config` object (User, Env, Entrypoint, ...); `built_from` goes
    into the history entry."""
    layer_gz = gzip_bytes(layer)
    arch = oci_arch()
    created = dt.datetime.fromtimestamp(EPOCH, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": process,
        "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
        "history": [
            {"created": created, "created_by": f"hack/build-agent-image.py from {built_from}"}
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


def python_packages() -> list[str]:
    """PYTHON_ROOTS and their Depends/PreDepends, recursively, from `apt-cache depends`.

    Of alternatives (`a | b`) the first is taken, a virtual package is replaced by its first
    provider, and PYTHON_SKIP (and what only they need) is left out. Sorted by name."""
    wanted: set[str] = set()
    todo = list(PYTHON_ROOTS)
    while todo:
        batch = sorted(set(todo) - wanted)
        todo = []
        wanted.update(batch)
        if not batch:
            break
        query = ["apt-cache", "depends", *APT_ONLY_DEPENDS, *batch]
        out = subprocess.run(query, check=True, capture_output=True, text=True).stdout
        todo = [name for name in _dependencies(out) if name not in PYTHON_SKIP]
    return sorted(wanted)


APT_ONLY_DEPENDS = [
    f"--no-{kind}" for kind in ("recommends", "suggests", "conflicts", "breaks", "replaces")
] + ["--no-enhances"]
_DEPENDS = re.compile(r"^ (?P<alt>[ |])(?:Pre)?Depends: (?P<name>\S+)$")


def _dependencies(apt_cache_out: str) -> list[str]:
    """The package names an `apt-cache depends` answer requires (see python_packages)."""
    names: list[str] = []
    in_group = False  # inside an `a | b | c` group whose first member was taken
    lines = apt_cache_out.splitlines()
    for index, line in enumerate(lines):
        match = _DEPENDS.match(line)
        if match is None:
            continue
        name = match["name"].split(":")[0]
        if not in_group:
            if name.startswith("<"):  # virtual: its providers follow, indented four spaces
                following = lines[index + 1] if index + 1 < len(lines) else ""
                name = following.strip() if following.startswith("    ") else ""
            if name:
                names.append(name)
        in_group = match["alt"] == "|"
    return names


def python_tree(debs: list[Path], workdir: Path) -> Entries:
    """The packages' files (dpkg-deb -x, no maintainer scripts), owners and mtimes fixed."""
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir)], check=True)
    files: Entries = {}
    for folder, subfolders, names in os.walk(workdir):
        subfolders.sort()
        for name in [*subfolders, *sorted(names)]:
            source = Path(folder) / name
            path = source.relative_to(workdir).as_posix()
            if path.startswith(PYTHON_DROP) or f"{path}/".startswith(PYTHON_DROP):
                continue
            stat = source.lstat()
            if source.is_symlink():
                link = _info(path, tarfile.SYMTYPE, 0o777)
                link.linkname = os.readlink(source)
                files[path] = (link, None)
            elif source.is_dir():
                files[path] = (_info(path, tarfile.DIRTYPE, stat.st_mode & 0o7777), None)
            else:
                data = source.read_bytes()
                info = _info(path, tarfile.REGTYPE, stat.st_mode & 0o7777)
                info.size = len(data)
                files[path] = (info, data)
    return files


def python_layer(debs: list[Path]) -> bytes:
    """The python agent image's rootfs: the packages, the SDK, the example agents, users."""
    with tempfile.TemporaryDirectory(prefix="python-agent-image-") as tmp:
        files = python_tree(debs, Path(tmp))
    for path, mode, uid in [
        *(d for d in DIRS if d[0] != "agent/www"),
        ("home/agent/work", 0o755, AGENT_UID),
        ("opt", 0o755, 0),
        ("run", 0o755, 0),
        ("usr/lib/python3", 0o755, 0),
        (SITE_PACKAGES, 0o755, 0),
    ]:
        files.setdefault(path, (_info(path, tarfile.DIRTYPE, mode, uid), None))
        files[path][0].uid = files[path][0].gid = uid

    def add_file(path: str, data: bytes, mode: int = 0o644) -> None:
        info = _info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        files[path] = (info, data)

    add_file("etc/passwd", USERS.replace("/bin/sh", "/usr/sbin/nologin").encode())
    add_file("etc/group", GROUP.encode())
    add_file("etc/hostname", b"python-agent\n")
    python3 = _info("usr/bin/python3", tarfile.SYMTYPE, 0o777)
    python3.linkname = "python3.11"
    files["usr/bin/python3"] = (python3, None)
    sdk = [f for f in sorted(SDK_DIR.rglob("*")) if f.is_file() and "__pycache__" not in f.parts]
    for source in sdk:
        path = f"{SITE_PACKAGES}/agentos_sdk/{source.relative_to(SDK_DIR).as_posix()}"
        for parent in Path(path).parents:
            if str(parent) != "." and str(parent) not in files:
                files[str(parent)] = (_info(str(parent), tarfile.DIRTYPE, 0o755), None)
        add_file(path, source.read_bytes())
    for source in sorted(EXAMPLES_DIR.glob("*.py")):
        add_file(f"agent/{source.name}", source.read_bytes(), 0o755)
    return tar_of(files)


def build_python(out: Path, cache_dir: Path, ref: str) -> str:
    """Write the python agent image's OCI layout tar to `out`; return the manifest digest."""
    packages = python_packages()
    debs = fetch_debs(cache_dir, packages)
    log(f"python agent image from {len(debs)} packages: {' '.join(packages)}")
    process = {
        "User": f"{AGENT_UID}:{AGENT_UID}",
        "Env": [
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "AGENTOS_WORK_DIR=/home/agent/work",
            "HOME=/home/agent",
            "LANG=C.UTF-8",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
        ],
        "Entrypoint": ["python3", "/agent/tool_agent.py"],
        "WorkingDir": "/agent",
        "Labels": {
            "org.opencontainers.image.title": "agentos python agent",
            "org.opencontainers.image.source.packages": " ".join(d.name for d in debs),
        },
    }
    built_from = ", ".join(d.name for d in debs) + ", sdk/python and examples/agents"
    return write_archive(out, ref, python_layer(debs), process, built_from)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="path of the OCI image layout tar to write")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where .debs go")
    parser.add_argument("--python", action="store_true", help="build the python agent image")
    parser.add_argument("--ref", help=f"image reference (default {DEFAULT_REF}, {PYTHON_REF})")
    args = parser.parse_args()
    if args.python:
        args.ref = args.ref or PYTHON_REF
        manifest_digest = build_python(args.out, args.cache_dir, args.ref)
    else:
        args.ref = args.ref or DEFAULT_REF
        manifest_digest = build(args.out, args.cache_dir, args.ref)
    log(f"wrote {args.out}: {args.ref} @ {manifest_digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

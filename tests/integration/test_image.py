"""The control-plane image: deploy/image/Containerfile, built by hack/build-image.sh with
buildah (no Docker engine, base from Debian's packages), imported into the real containerd of
`make services` and run there with runc.

The build is the script's own, cached: the first run on a machine makes the Debian base and
every layer (minutes); later runs reuse them (seconds). A missing tool (buildah, debootstrap,
ctr) fails the build, and so the test; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from controlplane.data.migrate import alembic_config
from controlplane.runtimes.containerd.oci_archive import OciArchive
from harness.waiting import wait_until
from tests.conftest import ROOT, service_setting

# The first build on a machine runs debootstrap and installs every dependency from PyPI.
pytestmark = [pytest.mark.containerd, pytest.mark.postgres, pytest.mark.timeout(1800)]

BUILD_TIMEOUT_S = 1500
VERSION = (ROOT / "VERSION").read_text().strip()
IMAGE = f"localhost/agentos/agentos:{VERSION}"
BASE_IMAGE = "localhost/agentos/debian-python:bookworm"
UID = 65532
# Compilers, build front ends and package installers: none may be in the final rootfs.
FORBIDDEN_PROGRAMS = {
    "cc", "c++", "gcc", "g++", "cpp", "clang", "ld", "as", "make",
    "pip", "pip3", "uv", "uvx",
}  # fmt: skip


@dataclass(frozen=True)
class BuiltImage:
    archive: Path
    manifest_digest: str
    config: dict[str, Any]
    layer_digests: list[str]


@pytest.fixture(scope="module")
def containerd() -> dict[str, str]:
    return {
        key: service_setting(key, "containerd")
        for key in ("CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "CONTAINERD_SNAPSHOTTER")
    }


@pytest.fixture(scope="module")
def built(containerd: dict[str, str]) -> BuiltImage:
    """hack/build-image.sh --import: the OCI archive it printed, read back."""
    result = subprocess.run(
        [str(ROOT / "hack" / "build-image.sh"), "--import"],
        env={**os.environ, **containerd},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"hack/build-image.sh failed:\n{result.stderr[-4000:]}"
    archive = Path(result.stdout.strip().splitlines()[-1])
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    with OciArchive(archive) as oci:
        image = oci.image("linux", arch)
        config = oci.read_json(image.config.digest)
    return BuiltImage(archive, image.manifest.digest, config, [b.digest for b in image.layers])


def ctr(
    containerd: dict[str, str], *args: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ctr",
            "--address",
            containerd["CONTAINERD_ADDRESS"],
            "--namespace",
            containerd["CONTAINERD_NAMESPACE"],
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def final_rootfs(archive: Path, layer_digests: list[str]) -> set[str]:
    """The paths of the image's rootfs: its layers applied in order, whiteouts included (OCI
    image spec, "Representing Changes")."""
    paths: set[str] = set()
    with tarfile.open(archive) as outer:
        for digest in layer_digests:
            blob = outer.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert blob is not None
            with tarfile.open(fileobj=blob, mode="r|*") as layer:
                for member in layer:
                    path = PurePosixPath(member.name.removeprefix("./"))
                    if path.name == ".wh..wh..opq":
                        prefix = f"{path.parent}/"
                        paths = {p for p in paths if not p.startswith(prefix)}
                    elif path.name.startswith(".wh."):
                        gone = str(path.parent / path.name.removeprefix(".wh."))
                        paths = {p for p in paths if p != gone and not p.startswith(f"{gone}/")}
                    else:
                        paths.add(str(path))
    return paths


def test_the_image_runs_as_the_non_root_user_65532(built: BuiltImage) -> None:
    assert built.config["config"]["User"] == f"{UID}:{UID}"


def test_the_entrypoint_is_agentos_and_the_default_command_serve(built: BuiltImage) -> None:
    config = built.config["config"]
    assert config["Entrypoint"] == ["agentos"]
    assert config["Cmd"] == ["serve"]
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8090/tcp"}
    assert "AGENTOS_HOST=0.0.0.0" in config["Env"]


def test_the_image_carries_the_oci_labels(built: BuiltImage) -> None:
    labels = built.config["config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == "agentos"
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert (
        labels["org.opencontainers.image.base.name"] == "localhost/agentos/debian-python:bookworm"
    )
    assert len(labels["org.opencontainers.image.revision"]) == 40


def test_the_final_rootfs_has_python_and_agentos_but_no_build_tools(rootfs: set[str]) -> None:
    paths = rootfs
    assert {"usr/bin/python3.11", "opt/agentos/bin/agentos"} <= paths
    programs = {
        PurePosixPath(p).name for p in paths if PurePosixPath(p).parent.name in {"bin", "sbin"}
    }
    assert programs & FORBIDDEN_PROGRAMS == set()
    assert not [p for p in programs if p.endswith("-gcc") or "-gcc-" in p]
    # No headers to build against, no source tree, no pip inside the venv.
    assert not [p for p in paths if p.startswith(("usr/include/python3", "src/"))]
    assert not [p for p in paths if "/site-packages/pip/" in p or "/site-packages/uv/" in p]


def test_containerd_holds_the_archived_image_under_its_name(
    built: BuiltImage, containerd: dict[str, str]
) -> None:
    listed = ctr(containerd, "images", "ls").stdout.splitlines()[1:]
    digests = {fields[0]: fields[2] for fields in map(str.split, listed) if fields}
    assert digests.get(IMAGE) == built.manifest_digest


def test_agentos_version_runs_in_the_container(
    built: BuiltImage, containerd: dict[str, str]
) -> None:
    result = ctr(
        containerd,
        "run",
        "--rm",
        "--snapshotter",
        containerd["CONTAINERD_SNAPSHOTTER"],
        "--read-only",
        IMAGE,
        f"it-image-version-{uuid.uuid4().hex[:8]}",
        "agentos",
        "version",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == VERSION


@pytest.fixture(scope="module")
def rootfs(built: BuiltImage) -> set[str]:
    return final_rootfs(built.archive, built.layer_digests)


def extension_modules(rootfs: set[str]) -> list[str]:
    """The dotted names of the compiled extension modules in the venv's site-packages."""
    site = "opt/agentos/lib/python3.11/site-packages/"
    modules = []
    for path in sorted(rootfs):
        name = PurePosixPath(path).name
        if (
            path.startswith(site)
            and "/tests/" not in path
            and name.endswith(".so")
            and (".cpython-" in name or ".abi3." in name)
        ):
            package = PurePosixPath(path.removeprefix(site)).parent.parts
            modules.append(".".join([*package, name.split(".", 1)[0]]))
    return modules


def test_the_compiled_extensions_load_in_the_container(
    built: BuiltImage, containerd: dict[str, str], rootfs: set[str]
) -> None:
    """Every wheel's compiled module loads on Debian's python3 and libc (asyncpg, grpc,
    pydantic-core, uvloop, ...), not only those `agentos serve` on SQLite happens to touch."""
    modules = extension_modules(rootfs)
    assert {"asyncpg.protocol.protocol", "grpc._cython.cygrpc", "uvloop.loop"} <= set(modules)
    result = ctr(
        containerd,
        "run",
        "--rm",
        "--snapshotter",
        containerd["CONTAINERD_SNAPSHOTTER"],
        "--read-only",
        IMAGE,
        f"it-image-native-{uuid.uuid4().hex[:8]}",
        "python3",
        "-c",
        "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]; print('ok')",
        *modules,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


async def _admin(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.fixture
def empty_database(pg_admin_dsn: str, database_url: str) -> Iterator[str]:
    """A new PostgreSQL database with no schema; dropped afterwards."""
    name = f"agentos_image_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_admin_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(pg_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_agentos_db_upgrade_from_the_image_migrates_postgresql(
    built: BuiltImage, containerd: dict[str, str], empty_database: str
) -> None:
    result = ctr(
        containerd,
        "run",
        "--rm",
        "--snapshotter",
        containerd["CONTAINERD_SNAPSHOTTER"],
        "--read-only",
        "--net-host",
        "--env",
        f"AGENTOS_DATABASE_URL={empty_database}",
        IMAGE,
        f"it-image-db-{uuid.uuid4().hex[:8]}",
        "agentos",
        "db",
        "upgrade",
        timeout_s=120,
    )
    assert result.returncode == 0, result.stderr
    head = ScriptDirectory.from_config(alembic_config(empty_database)).get_current_head()
    dsn = (
        make_url(empty_database).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    assert asyncio.run(_admin(dsn, "SELECT version_num FROM alembic_version")) == head


@pytest.fixture
def serving(
    built: BuiltImage, containerd: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """`agentos serve` from the image, as the image says (entrypoint, command, user, env):
    a read-only rootfs, a tmpfs for its SQLite database and state, its own network namespace.
    Yields (container id, the `ctr run` process, its log file)."""
    cid = f"it-image-serve-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "serve.log"
    tmpfs = "type=tmpfs,src=tmpfs,dst={},options=rw:nosuid:nodev:{}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "ctr",
                "--address",
                containerd["CONTAINERD_ADDRESS"],
                "--namespace",
                containerd["CONTAINERD_NAMESPACE"],
                "run",
                "--rm",
                "--snapshotter",
                containerd["CONTAINERD_SNAPSHOTTER"],
                "--read-only",
                "--mount",
                tmpfs.format("/var/lib/agentos", f"uid={UID}:gid={UID}:mode=0750"),
                "--mount",
                tmpfs.format("/tmp", "mode=1777"),
                IMAGE,
                cid,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield cid, proc, log
    finally:
        if proc.poll() is None:
            ctr(containerd, "task", "kill", "--signal", "SIGKILL", cid)
            proc.wait(timeout=60)
        ctr(containerd, "task", "delete", "--force", cid)
        ctr(containerd, "containers", "delete", cid)


def task_pid(containerd: dict[str, str], cid: str) -> int | None:
    listed = ctr(containerd, "task", "ls").stdout.splitlines()[1:]
    for line in listed:
        fields = line.split()
        if fields and fields[0] == cid and fields[2] == "RUNNING":
            return int(fields[1])
    return None


def exec_in(containerd: dict[str, str], cid: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return ctr(containerd, "task", "exec", "--exec-id", f"x-{uuid.uuid4().hex[:8]}", cid, *argv)


GET = (
    "import sys, urllib.request as r; "
    "resp = r.urlopen('http://127.0.0.1:8080' + sys.argv[1], timeout=2); "
    "print(resp.status, resp.read().decode())"
)


def test_serve_answers_healthz_inside_the_container_as_65532_on_a_read_only_rootfs(
    serving: tuple[str, subprocess.Popen[bytes], Path], containerd: dict[str, str]
) -> None:
    cid, proc, log = serving
    pid = wait_until(lambda: task_pid(containerd, cid), 60, f"task {cid} running")

    def healthz() -> str | None:
        assert proc.poll() is None, f"serve exited ({proc.returncode}):\n{log.read_text()}"
        result = exec_in(containerd, cid, "python3", "-c", GET, "/healthz")
        return result.stdout.strip() if result.returncode == 0 else None

    answer = wait_until(healthz, 90, "GET /healthz from inside the container")
    assert answer.startswith("200 ")
    assert json.loads(answer.split(" ", 1)[1]) == {"status": "ok"}

    # The kernel's view: the server is the container's init, running as 65532.
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"Uid:\t{UID}\t{UID}\t{UID}\t{UID}" in status
    assert "agentos" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    # The rootfs is read-only; the tmpfs holds the SQLite database serve migrated.
    denied = exec_in(containerd, cid, "touch", "/opt/agentos/written")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert exec_in(containerd, cid, "test", "-s", "/var/lib/agentos/agentos.db").returncode == 0

    # SIGTERM: serve drains and exits 0 (what a kubelet or `ctr task kill` sends).
    assert ctr(containerd, "task", "kill", "--signal", "SIGTERM", cid).returncode == 0
    assert proc.wait(timeout=60) == 0, log.read_text()

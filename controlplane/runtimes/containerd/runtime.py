"""The containerd runtime backend (DESIGN §5): sandboxes are containerd containers and tasks.

`ContainerdRuntime` talks to containerd's own gRPC API (v1, containerd 1.6) with grpc.aio and
our generated stubs (`containerd/api`, see its `proto/`); it never shells out to `ctr`. Every
call carries the `containerd-namespace` metadata header.

One sandbox is:
- a container `<sandbox_id>` (labels from `SandboxSpec.labels()`, the OCI runtime spec as
  JSON, the runtime of its runtime class, snapshotter and snapshot key `<sandbox_id>`);
- an active snapshot `<sandbox_id>` on the image's unpacked layers (parent: the chain ID of the
  image config's `rootfs.diff_ids`);
- a task (the running process tree), its stdout and stderr appended to `<dir>/output.log` by
  containerd's runc shim (`file://` IO);
- a host folder `<state_dir>/<sandbox_id>/` with `output.log` and `agentos/` (`config.json`,
  the heartbeat file), the latter bind-mounted read-write at `/agentos` in the sandbox.

Runtime classes (`RuntimeClass`):
- `runc`: containerd's `io.containerd.runc.v2`. The sandbox shares the host's network
  namespace, so the agent's ports are the host's and an HTTP probe reaches
  `http://127.0.0.1:<port>` from here. That is no network isolation at all (and two agents
  cannot listen on one port); it is the price of probing from the host without CNI.
- `gvisor`: runsc through the runc v2 shim, by runtime name (`io.containerd.gvisor.v2` from
  hack/services.d/30-containerd.sh) or by runc option BinaryName (a runsc wrapper). runsc runs
  with `--network=none` there (its own network stack refuses to run in the host's namespace,
  and `--network=host` leaves loopback down in a namespace of its own): the sandbox has only
  the Sentry's own loopback, which nothing on the host can reach, and no other network at all.
  So it gets a fresh network namespace (sharing the host's would change nothing) and an HTTP
  probe runs *inside* the sandbox, as `wget` through a task exec (the image must have `wget`;
  busybox has).

Images: either already in containerd and unpacked for the configured snapshotter (`ctr images
import/pull --snapshotter ...`), or a local OCI archive named `oci-archive:/abs/path.tar`,
which `create` imports through the API on first use: blobs into the content store
(content.Write, checked against their digests), each layer unpacked (snapshots.Prepare →
diff.Apply → snapshots.Commit under its chain ID) and an image `oci-archive:PATH@<manifest
digest>` (images.Create). Everything imported is pinned by a lease `agentos-image-<digest>`
that never expires, so containerd's garbage collector keeps it. Pulling from a registry is
not done here.

Errors: every failure is a `SandboxError` with a CamelCase `reason`: `RuntimeUnavailable`
(containerd does not answer), `ImageNotFound`, `ImageNotUnpacked`, `InvalidImage`,
`InvalidSpec`, `UnknownRuntimeClass`, `CreateFailed` (the runtime refused the task, e.g. runc
finds no such binary), `StartFailed`, `NotFound`, `ContainerdError` (anything else).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
from google.protobuf import any_pb2

from controlplane.runtimes.base import (
    LABEL_AGENT_ID,
    LABEL_MANAGED,
    ProbeSpec,
    SandboxError,
    SandboxSpec,
    SandboxState,
    SandboxStatus,
)
from controlplane.runtimes.containerd.api import containerd_containers_pb2 as containers_pb2
from controlplane.runtimes.containerd.api import containerd_containers_pb2_grpc as containers_grpc
from controlplane.runtimes.containerd.api import containerd_content_pb2 as content_pb2
from controlplane.runtimes.containerd.api import containerd_content_pb2_grpc as content_grpc
from controlplane.runtimes.containerd.api import containerd_diff_pb2 as diff_pb2
from controlplane.runtimes.containerd.api import containerd_diff_pb2_grpc as diff_grpc
from controlplane.runtimes.containerd.api import containerd_images_pb2 as images_pb2
from controlplane.runtimes.containerd.api import containerd_images_pb2_grpc as images_grpc
from controlplane.runtimes.containerd.api import containerd_leases_pb2 as leases_pb2
from controlplane.runtimes.containerd.api import containerd_leases_pb2_grpc as leases_grpc
from controlplane.runtimes.containerd.api import containerd_runc_options_pb2 as runc_options_pb2
from controlplane.runtimes.containerd.api import containerd_snapshots_pb2 as snapshots_pb2
from controlplane.runtimes.containerd.api import containerd_snapshots_pb2_grpc as snapshots_grpc
from controlplane.runtimes.containerd.api import containerd_task_pb2 as task_pb2
from controlplane.runtimes.containerd.api import containerd_tasks_pb2 as tasks_pb2
from controlplane.runtimes.containerd.api import containerd_tasks_pb2_grpc as tasks_grpc
from controlplane.runtimes.containerd.api import containerd_types_pb2 as types_pb2
from controlplane.runtimes.containerd.oci_archive import (
    ArchivedImage,
    Blob,
    OciArchive,
    archive_path,
)

# typeurl names containerd and its runc shim decode.
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options"
RUNC_V2 = "io.containerd.runc.v2"

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"
GC_EXPIRE_LABEL = "containerd.io/gc.expire"

DEFAULT_STATE_DIR = Path("/var/lib/agentos/sandboxes")
DEFAULT_NAMESPACE = "agentos"
DEFAULT_SNAPSHOTTER = "overlayfs"

# Inside the sandbox.
AGENTOS_MOUNT = "/agentos"
CONFIG_FILE = "config.json"
HEARTBEAT_FILE = "heartbeat"
LOG_FILE = "output.log"

CPU_PERIOD_US = 100_000
# Kept for agents: a small default set (Docker's, without NET_RAW, MKNOD, SYS_CHROOT,
# AUDIT_WRITE, SETFCAP). Non-root agents get them in the bounding set only.
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

INDEX_MEDIA_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_MEDIA_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
MAX_BLOB_BYTES = 4 * 1024 * 1024  # manifests and configs are small; refuse anything bigger

RPC_TIMEOUT_S = 30.0  # one containerd call (task create under gVisor boots a sandbox)
KILL_WAIT_S = 10.0  # how long remove() waits for SIGKILL to take effect


@dataclass(frozen=True)
class RuntimeClass:
    """How one runtime class (`SandboxSpec.runtime_class`) maps onto containerd.

    `runtime`: containerd runtime (shim) name, e.g. `io.containerd.runc.v2`.
    `binary_name`: runc option BinaryName, a runc-compatible binary for the runc v2 shim (e.g.
    a runsc wrapper); "" for the shim's default (`runc` on its PATH).
    `host_network`: share the host's network namespace (HTTP probes from the host); else the
    sandbox gets its own and HTTP probes run inside it.
    """

    runtime: str = RUNC_V2
    binary_name: str = ""
    host_network: bool = True

    def options(self) -> any_pb2.Any | None:
        """The container's runtime options (runc shim Options), or None."""
        if not self.binary_name:
            return None
        opts = runc_options_pb2.Options(binary_name=self.binary_name)
        return any_pb2.Any(type_url=RUNC_OPTIONS_TYPE_URL, value=opts.SerializeToString())


@dataclass(frozen=True)
class _Image:
    """What a sandbox needs from an image config."""

    ref: str
    chain_id: str  # "" for an image without layers
    entrypoint: list[str]
    cmd: list[str]
    env: list[str]
    user: str
    workdir: str


def chain_id(diff_ids: Sequence[str]) -> str:
    """The OCI chain ID of layers with these diff IDs ("" for none).

    ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
    containerd names the committed snapshot of an unpacked layer stack by its chain ID.
    """
    if not diff_ids:
        return ""
    chain = diff_ids[0]
    for diff_id in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return chain


def process_args(spec: SandboxSpec, entrypoint: list[str], cmd: list[str]) -> list[str]:
    """argv of the agent, with Kubernetes' command/args semantics over the image's.

    command replaces the image's Entrypoint (and drops its Cmd); args replace the Cmd.
    """
    if spec.command:
        return [*spec.command, *spec.args]
    return [*entrypoint, *(spec.args or cmd)]


def merge_env(*layers: Sequence[str] | dict[str, str]) -> list[str]:
    """KEY=VALUE list, later layers overriding earlier ones, first-seen order kept."""
    env: dict[str, str] = {}
    for layer in layers:
        items = layer.items() if isinstance(layer, dict) else (e.partition("=")[::2] for e in layer)
        for key, value in items:
            env[key] = value
    return [f"{k}={v}" for k, v in env.items()]


def normalize_image_ref(ref: str) -> str:
    """A Docker-style short name as containerd stores it: docker.io/library/x:latest."""
    name, _, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}" if rest else f"docker.io/library/{name}"
    if digest:
        return f"{name}@{digest}"
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def _host_platform() -> tuple[str, str]:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )
    return "linux", arch


def _rootfs_dirs(mounts: Sequence[types_pb2.Mount]) -> list[Path]:
    """Host directories whose union is the rootfs (upper first), for reading /etc/passwd."""
    dirs: list[Path] = []
    for m in mounts:
        if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
            dirs.append(Path(m.source))
        elif m.type == "overlay":
            opts = dict(o.partition("=")[::2] for o in m.options)
            if opts.get("upperdir"):
                dirs.append(Path(opts["upperdir"]))
            dirs.extend(Path(d) for d in opts.get("lowerdir", "").split(":") if d)
    return dirs


def _lookup(dirs: Sequence[Path], file: str, name: str) -> list[str] | None:
    """The colon-split line of /etc/passwd or /etc/group whose name or id is `name`."""
    for d in dirs:
        path = d / "etc" / file
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and name in (fields[0], fields[2]):
                return fields
        return None  # the topmost layer with the file decides
    return None


def resolve_user(user: str, mounts: Sequence[types_pb2.Mount]) -> tuple[int, int]:
    """(uid, gid) for an image config's User ("", "uid", "uid:gid", "name", "name:group").

    Names are looked up in the image's /etc/passwd and /etc/group; a numeric uid without a
    group gets its passwd entry's primary group, else 0 (as containerd does).
    """
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    dirs = _rootfs_dirs(mounts)
    passwd = _lookup(dirs, "passwd", name)
    if name.isdigit():
        uid = int(name)
    elif passwd is not None:
        uid = int(passwd[2])
    else:
        raise SandboxError("InvalidImage", f"user {name!r} is not in the image's /etc/passwd")
    if not group:
        gid = int(passwd[3]) if passwd is not None else 0
    elif group.isdigit():
        gid = int(group)
    else:
        entry = _lookup(dirs, "group", group)
        if entry is None:
            raise SandboxError("InvalidImage", f"group {group!r} is not in the image's /etc/group")
        gid = int(entry[2])
    return uid, gid


def build_oci_spec(
    spec: SandboxSpec,
    image: _Image,
    uid: int,
    gid: int,
    sandbox_dir: Path,
    namespace: str,
    host_network: bool,
) -> dict[str, Any]:
    """The OCI runtime spec (config.json shape, runtime-spec 1.0) for one sandbox.

    Limits: cpu_millis → CFS quota over a 100 ms period (500 → 50 000 µs, at least 1 000 µs,
    the kernel's minimum); memory_bytes → memory limit in bytes; 0 means no limit. They are
    limits on the sandbox's cgroup `/<namespace>/<sandbox_id>` (cgroupfs driver). runc puts
    the agent's processes there. runsc, as hack/services.d/30-containerd.sh runs it (without
    `--ignore-cgroups`), puts its sandbox process (the Sentry, which runs all of the agent's
    code) there, so the limits hold for gVisor too; the integration test reads them from the
    cgroup of the task's pid for both. On a host where runsc must run with `--ignore-cgroups`
    they would not be enforced by cgroups at all.
    """
    args = process_args(spec, image.entrypoint, image.cmd)
    if not args:
        raise SandboxError("InvalidSpec", f"{image.ref} has no entrypoint and no command given")
    env = merge_env(
        [f"PATH={DEFAULT_PATH}"],
        image.env,
        spec.env,
        {
            "AGENTOS_CONFIG_FILE": f"{AGENTOS_MOUNT}/{CONFIG_FILE}",
            "AGENTOS_HEARTBEAT_FILE": f"{AGENTOS_MOUNT}/{HEARTBEAT_FILE}",
        },
    )
    caps = list(DEFAULT_CAPABILITIES)
    granted = caps if uid == 0 else []
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if spec.cpu_millis > 0:
        resources["cpu"] = {
            "quota": max(1000, spec.cpu_millis * CPU_PERIOD_US // 1000),
            "period": CPU_PERIOD_US,
        }
    if spec.memory_bytes > 0:
        resources["memory"] = {"limit": spec.memory_bytes}
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if not host_network:
        namespaces.append({"type": "network"})
    hostname = "".join(c if c.isalnum() or c in "-." else "-" for c in spec.name)[:63].strip("-.")
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": image.workdir or "/",
            "capabilities": {
                "bounding": caps,
                "effective": granted,
                "permitted": granted,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": hostname or "agent",
        "mounts": [
            _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
            _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
            _mount(
                "/dev/pts",
                "devpts",
                "devpts",
                ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            ),
            _mount(
                "/dev/shm",  # noqa: S108 - the container's own /dev/shm
                "tmpfs",
                "shm",
                ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            ),
            _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
            _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
            _mount("/run", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
            _mount(AGENTOS_MOUNT, "bind", str(sandbox_dir / "agentos"), ["rbind", "rw"]),
        ],
        "linux": {
            "resources": resources,
            "cgroupsPath": f"/{namespace}/{spec.sandbox_id}",
            "namespaces": namespaces,
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware",
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }


def _mount(dest: str, type_: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": dest, "type": type_, "source": source, "options": options}


def _timed_out(err: grpc.aio.AioRpcError) -> bool:
    """The call's deadline passed: seen here, or by containerd first (then it answers
    UNKNOWN "context deadline exceeded")."""
    if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return True
    return err.code() == grpc.StatusCode.UNKNOWN and "deadline exceeded" in (err.details() or "")


def _error(err: grpc.aio.AioRpcError, what: str) -> SandboxError:
    if err.code() == grpc.StatusCode.UNAVAILABLE:
        return SandboxError(
            "RuntimeUnavailable", f"containerd does not answer ({what}): {err.details()}"
        )
    return SandboxError("ContainerdError", f"{what}: {err.code().name}: {err.details()}")


class ContainerdRuntime:
    """Sandboxes as containerd containers (see the module docstring).

    `address`: containerd's gRPC socket path (or `unix://...`). `namespace`: the containerd
    namespace every object lives in. `snapshotter`: where images are unpacked (overlayfs,
    native, ...). `runtimes`: runtime class name (`runc`, `gvisor`) → `RuntimeClass`.
    `state_dir`: the host folder for per-sandbox folders. `rpc_timeout_s`: deadline of one
    containerd call, seconds.
    """

    name = "containerd"

    def __init__(
        self,
        address: str,
        namespace: str,
        *,
        snapshotter: str = DEFAULT_SNAPSHOTTER,
        runtimes: dict[str, RuntimeClass] | None = None,
        state_dir: Path = DEFAULT_STATE_DIR,
        rpc_timeout_s: float = RPC_TIMEOUT_S,
    ) -> None:
        self.address = address if "://" in address else f"unix://{address}"
        self.namespace = namespace
        self.snapshotter = snapshotter
        self.runtimes = dict(runtimes) if runtimes is not None else {"runc": RuntimeClass()}
        self.state_dir = Path(state_dir)
        self.rpc_timeout_s = rpc_timeout_s
        self._metadata = ((NAMESPACE_HEADER, namespace),)
        self._channel: grpc.aio.Channel | None = None
        self._http: httpx.AsyncClient | None = None
        self._imports: dict[Path, asyncio.Lock] = {}

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ContainerdRuntime:
        """Settings from the environment (the variables `.services/env` holds).

        CONTAINERD_ADDRESS (required), CONTAINERD_NAMESPACE (default "agentos"),
        CONTAINERD_SNAPSHOTTER (default "overlayfs"), AGENTOS_RUNC_RUNTIME (default
        io.containerd.runc.v2), AGENTOS_RUNSC_RUNTIME (gVisor by runtime name) or else
        AGENTOS_RUNSC_BINARY (gVisor as the runc shim's BinaryName), AGENTOS_SANDBOX_DIR
        (default /var/lib/agentos/sandboxes).
        Without either runsc variable there is no `gvisor` runtime class.
        """
        env = dict(os.environ) if env is None else env
        address = env.get("CONTAINERD_ADDRESS", "")
        if not address:
            raise SandboxError("RuntimeUnavailable", "CONTAINERD_ADDRESS is not set")
        runsc_binary = env.get("AGENTOS_RUNSC_BINARY", "")
        runtimes = {"runc": RuntimeClass(runtime=env.get("AGENTOS_RUNC_RUNTIME") or RUNC_V2)}
        if env.get("AGENTOS_RUNSC_RUNTIME"):
            runtimes["gvisor"] = RuntimeClass(
                runtime=env["AGENTOS_RUNSC_RUNTIME"],
                host_network=False,
            )
        elif runsc_binary:
            runtimes["gvisor"] = RuntimeClass(
                runtime=RUNC_V2,
                binary_name=runsc_binary,
                host_network=False,
            )
        return cls(
            address,
            env.get("CONTAINERD_NAMESPACE") or DEFAULT_NAMESPACE,
            snapshotter=env.get("CONTAINERD_SNAPSHOTTER") or DEFAULT_SNAPSHOTTER,
            runtimes=runtimes,
            state_dir=Path(env.get("AGENTOS_SANDBOX_DIR") or DEFAULT_STATE_DIR),
        )

    # --- plumbing -------------------------------------------------------------------------

    def _chan(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address)
        return self._channel

    def _md(self, lease: str = "") -> tuple[tuple[str, str], ...]:
        return (*self._metadata, (LEASE_HEADER, lease)) if lease else self._metadata

    def _stub(self, stub_class: Any) -> Any:
        """A stub of a generated service (grpcio-tools writes them untyped)."""
        return stub_class(self._chan())

    @property
    def _containers(self) -> Any:
        return self._stub(containers_grpc.ContainersStub)

    @property
    def _tasks(self) -> Any:
        return self._stub(tasks_grpc.TasksStub)

    @property
    def _snapshots(self) -> Any:
        return self._stub(snapshots_grpc.SnapshotsStub)

    def sandbox_dir(self, sandbox_id: str) -> Path:
        """The host folder of one sandbox: output.log, agentos/config.json, agentos/heartbeat."""
        if not sandbox_id or "/" in sandbox_id or sandbox_id in {".", ".."}:
            raise SandboxError("InvalidSpec", f"invalid sandbox id {sandbox_id!r}")
        return self.state_dir / sandbox_id

    async def _get_container(self, sandbox_id: str) -> containers_pb2.Container | None:
        try:
            resp = await self._containers.Get(
                containers_pb2.GetContainerRequest(id=sandbox_id),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _error(err, f"get container {sandbox_id}") from err
        container: containers_pb2.Container = resp.container
        return container

    async def _get_task(self, sandbox_id: str, exec_id: str = "") -> task_pb2.Process | None:
        try:
            resp = await self._tasks.Get(
                tasks_pb2.GetRequest(container_id=sandbox_id, exec_id=exec_id),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _error(err, f"get task {sandbox_id}") from err
        process: task_pb2.Process = resp.process
        return process

    async def _read_blob(self, digest: str) -> bytes:
        """A blob from the content store, checked against its sha256 digest."""
        stub = self._stub(content_grpc.ContentStub)
        chunks: list[bytes] = []
        size = 0
        try:
            call = stub.Read(
                content_pb2.ReadContentRequest(digest=digest),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
            async for part in call:
                size += len(part.data)
                if size > MAX_BLOB_BYTES:
                    call.cancel()
                    raise SandboxError("InvalidImage", f"blob {digest} exceeds {MAX_BLOB_BYTES} B")
                chunks.append(part.data)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise SandboxError("ImageNotFound", f"blob {digest} is not in containerd") from err
            raise _error(err, f"read blob {digest}") from err
        data = b"".join(chunks)
        algo, _, hexdigest = digest.partition(":")
        if algo == "sha256" and hashlib.sha256(data).hexdigest() != hexdigest:
            raise SandboxError("InvalidImage", f"blob {digest} does not match its digest")
        return data

    async def _resolve_image(self, ref: str) -> _Image:
        """images.Get → manifest (from an index: this host's platform) → config."""
        stub = self._stub(images_grpc.ImagesStub)
        image: images_pb2.Image | None = None
        for name in dict.fromkeys([ref, normalize_image_ref(ref)]):
            try:
                resp = await stub.Get(
                    images_pb2.GetImageRequest(name=name),
                    metadata=self._md(),
                    timeout=self.rpc_timeout_s,
                )
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    continue
                raise _error(err, f"get image {name}") from err
            image = resp.image
            break
        if image is None:
            raise SandboxError(
                "ImageNotFound", f"image {ref} is not in containerd namespace {self.namespace}"
            )
        target = image.target
        for _ in range(4):  # an index may (rarely) point at another index
            if target.media_type not in INDEX_MEDIA_TYPES:
                break
            index = json.loads(await self._read_blob(target.digest))
            want_os, want_arch = _host_platform()
            for desc in index.get("manifests", []):
                plat = desc.get("platform") or {}
                if plat.get("os") == want_os and plat.get("architecture") == want_arch:
                    target = types_pb2.Descriptor(
                        media_type=desc.get("mediaType", ""), digest=desc["digest"]
                    )
                    break
            else:
                raise SandboxError("InvalidImage", f"{ref} has no {want_os}/{want_arch} manifest")
        if target.media_type not in MANIFEST_MEDIA_TYPES:
            raise SandboxError("InvalidImage", f"{ref}: unsupported media type {target.media_type}")
        manifest = json.loads(await self._read_blob(target.digest))
        config = json.loads(await self._read_blob(manifest["config"]["digest"]))
        cfg = config.get("config") or {}
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        return _Image(
            ref=image.name,
            chain_id=chain_id(diff_ids),
            entrypoint=list(cfg.get("Entrypoint") or []),
            cmd=list(cfg.get("Cmd") or []),
            env=list(cfg.get("Env") or []),
            user=cfg.get("User") or "",
            workdir=cfg.get("WorkingDir") or "",
        )

    async def import_archive(self, path: Path) -> str:
        """Import the OCI archive at `path` (see the module docstring); returns the image
        name. Idempotent and cheap once done (one images.Get). Raises SandboxError
        (InvalidImage, ContainerdError, RuntimeUnavailable)."""
        async with self._imports.setdefault(path, asyncio.Lock()):
            with OciArchive(path) as archive:
                image = await asyncio.to_thread(archive.image, *_host_platform())
                name = f"oci-archive:{path}@{image.manifest.digest}"
                images = self._stub(images_grpc.ImagesStub)
                try:
                    await images.Get(
                        images_pb2.GetImageRequest(name=name),
                        metadata=self._md(),
                        timeout=self.rpc_timeout_s,
                    )
                    return name
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        raise _error(err, f"get image {name}") from err
                lease = await self._image_lease(image.manifest.digest)
                for blob in (image.config, *image.layers, image.manifest):
                    await self._write_blob(archive, blob, lease)
                await self._unpack(image, lease)
                target = types_pb2.Descriptor(
                    media_type=image.manifest.media_type,
                    digest=image.manifest.digest,
                    size=image.manifest.size,
                )
                try:
                    await images.Create(
                        images_pb2.CreateImageRequest(
                            image=images_pb2.Image(name=name, target=target)
                        ),
                        metadata=self._md(lease),
                        timeout=self.rpc_timeout_s,
                    )
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                        raise _error(err, f"create image {name}") from err
        return name

    async def _image_lease(self, manifest_digest: str) -> str:
        """The lease that pins an imported image's blobs and snapshots (no expiry)."""
        lease_id = f"agentos-image-{manifest_digest.partition(':')[2][:32]}"
        try:
            await self._stub(leases_grpc.LeasesStub).Create(
                leases_pb2.CreateRequest(id=lease_id),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise _error(err, "create image lease") from err
        return lease_id

    async def _write_blob(self, archive: OciArchive, blob: Blob, lease: str) -> None:
        """content.Write of one blob (skipped when the store has it); containerd checks the
        size and digest at commit."""
        stub = self._stub(content_grpc.ContentStub)
        try:
            await stub.Info(
                content_pb2.InfoRequest(digest=blob.digest),
                metadata=self._md(lease),
                timeout=self.rpc_timeout_s,
            )
            return
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise _error(err, f"content info {blob.digest}") from err
        chunks = await asyncio.to_thread(lambda: list(archive.chunks(blob.digest)))
        ref = f"agentos-import-{blob.digest}"

        def requests() -> list[content_pb2.WriteContentRequest]:
            out, offset = [], 0
            for chunk in chunks:
                out.append(
                    content_pb2.WriteContentRequest(
                        action=content_pb2.WRITE, ref=ref, offset=offset, data=chunk
                    )
                )
                offset += len(chunk)
            out.append(
                content_pb2.WriteContentRequest(
                    action=content_pb2.COMMIT,
                    ref=ref,
                    offset=offset,
                    total=blob.size,
                    expected=blob.digest,
                )
            )
            return out

        try:
            call = stub.Write(iter(requests()), metadata=self._md(lease), timeout=300)
            last = None
            async for response in call:
                last = response
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.ALREADY_EXISTS:
                return  # written meanwhile by someone else
            raise _error(err, f"write blob {blob.digest}") from err
        if last is None or last.digest != blob.digest:
            raise SandboxError("ContainerdError", f"write of blob {blob.digest} did not commit")

    async def _unpack(self, image: ArchivedImage, lease: str) -> None:
        """Each layer applied onto its parent's snapshot and committed under its chain ID."""
        parent = ""
        for i, layer in enumerate(image.layers):
            chain = chain_id(image.diff_ids[: i + 1])
            if not await self._snapshot_exists(chain):
                key = f"agentos-extract-{uuid.uuid4().hex[:12]}-{chain}"
                mounts = await self._prepare_snapshot(key, parent, lease)
                try:
                    resp = await self._stub(diff_grpc.DiffStub).Apply(
                        diff_pb2.ApplyRequest(
                            diff=types_pb2.Descriptor(
                                media_type=layer.media_type, digest=layer.digest, size=layer.size
                            ),
                            mounts=mounts,
                        ),
                        metadata=self._md(lease),
                        timeout=300,
                    )
                    if resp.applied.digest != image.diff_ids[i]:
                        raise SandboxError(
                            "InvalidImage",
                            f"layer {layer.digest} unpacks to {resp.applied.digest}, "
                            f"not its diff_id {image.diff_ids[i]}",
                        )
                    await self._snapshots.Commit(
                        snapshots_pb2.CommitSnapshotRequest(
                            snapshotter=self.snapshotter, name=chain, key=key
                        ),
                        metadata=self._md(lease),
                        timeout=self.rpc_timeout_s,
                    )
                except grpc.aio.AioRpcError as err:
                    await self._remove_snapshot(key)
                    if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                        raise _error(err, f"unpack layer {layer.digest}") from err
                except SandboxError:
                    await self._remove_snapshot(key)
                    raise
            parent = chain

    async def _snapshot_exists(self, key: str) -> bool:
        try:
            await self._snapshots.Stat(
                snapshots_pb2.StatSnapshotRequest(snapshotter=self.snapshotter, key=key),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
            return True
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise _error(err, f"stat snapshot {key}") from err

    async def _prepare_snapshot(self, sandbox_id: str, parent: str, lease: str) -> list[Any]:
        """An active snapshot `sandbox_id` on `parent`; its mounts (existing one: as it is)."""
        try:
            resp = await self._snapshots.Prepare(
                snapshots_pb2.PrepareSnapshotRequest(
                    snapshotter=self.snapshotter, key=sandbox_id, parent=parent
                ),
                metadata=self._md(lease),
                timeout=self.rpc_timeout_s,
            )
            return list(resp.mounts)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise SandboxError(
                    "ImageNotUnpacked",
                    f"the image's layers ({parent}) are not unpacked for snapshotter "
                    f"{self.snapshotter}: import or pull it with --snapshotter {self.snapshotter}",
                ) from err
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise _error(err, f"prepare snapshot {sandbox_id}") from err
        return await self._snapshot_mounts(sandbox_id)

    async def _snapshot_mounts(self, sandbox_id: str) -> list[Any]:
        try:
            resp = await self._snapshots.Mounts(
                snapshots_pb2.MountsRequest(snapshotter=self.snapshotter, key=sandbox_id),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            raise _error(err, f"mounts of snapshot {sandbox_id}") from err
        return list(resp.mounts)

    def _write_files(self, spec: SandboxSpec, uid: int, gid: int) -> Path:
        """The sandbox folder: agentos/config.json; agentos/ writable by the agent's user."""
        root = self.sandbox_dir(spec.sandbox_id)
        inner = root / "agentos"
        inner.mkdir(parents=True, exist_ok=True)
        root.chmod(0o711)
        config = inner / CONFIG_FILE
        tmp = config.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec.config, indent=2, sort_keys=True))
        tmp.chmod(0o644)
        tmp.replace(config)
        if os.geteuid() == 0:
            os.chown(inner, uid, gid)
            inner.chmod(0o755)
        else:  # cannot give the folder away: let any user write the heartbeat
            inner.chmod(0o777)
        return root

    # --- Runtime protocol -----------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> SandboxStatus:
        """Create the container, its snapshot, folder and task (not started).

        Idempotent: an existing container is returned as it is (its task created if a previous
        call stopped before that). Raises SandboxError (UnknownRuntimeClass, ImageNotFound,
        ImageNotUnpacked, InvalidImage, InvalidSpec, CreateFailed, RuntimeUnavailable,
        ContainerdError). After CreateFailed the container exists without a task (CREATED);
        start() retries the task, remove() deletes it.
        """
        rc = self.runtimes.get(spec.runtime_class)
        if rc is None:
            raise SandboxError(
                "UnknownRuntimeClass",
                f"runtime class {spec.runtime_class!r} is not configured "
                f"(have: {', '.join(sorted(self.runtimes))})",
            )
        sandbox_dir = self.sandbox_dir(spec.sandbox_id)
        container = await self._get_container(spec.sandbox_id)
        if container is None:
            archive = archive_path(spec.image)
            ref = spec.image if archive is None else await self.import_archive(archive)
            image = await self._resolve_image(ref)
            lease = await self._create_lease(spec.sandbox_id)
            try:
                mounts = await self._prepare_snapshot(spec.sandbox_id, image.chain_id, lease)
                uid, gid = await asyncio.to_thread(resolve_user, image.user, mounts)
                await asyncio.to_thread(self._write_files, spec, uid, gid)
                oci = build_oci_spec(
                    spec, image, uid, gid, sandbox_dir, self.namespace, rc.host_network
                )
                container = containers_pb2.Container(
                    id=spec.sandbox_id,
                    labels=spec.labels(),
                    image=image.ref,
                    runtime=containers_pb2.Container.Runtime(name=rc.runtime),
                    spec=any_pb2.Any(type_url=SPEC_TYPE_URL, value=json.dumps(oci).encode()),
                    snapshotter=self.snapshotter,
                    snapshot_key=spec.sandbox_id,
                )
                if (options := rc.options()) is not None:
                    container.runtime.options.CopyFrom(options)
                try:
                    resp = await self._containers.Create(
                        containers_pb2.CreateContainerRequest(container=container),
                        metadata=self._md(lease),
                        timeout=self.rpc_timeout_s,
                    )
                    container = resp.container
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                        raise _error(err, f"create container {spec.sandbox_id}") from err
            finally:
                await self._delete_lease(lease)
        if await self._get_task(spec.sandbox_id) is None:
            await self._create_task(spec.sandbox_id)
        return await self.status(spec.sandbox_id)

    async def _create_lease(self, sandbox_id: str) -> str:
        """A lease that expires by itself in 10 minutes should we crash before deleting it."""
        expire = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
        lease_id = f"agentos-create-{sandbox_id}-{uuid.uuid4().hex[:8]}"
        try:
            await self._stub(leases_grpc.LeasesStub).Create(
                leases_pb2.CreateRequest(
                    id=lease_id,
                    labels={GC_EXPIRE_LABEL: expire.strftime("%Y-%m-%dT%H:%M:%SZ")},
                ),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            raise _error(err, "create lease") from err
        return lease_id

    async def _delete_lease(self, lease_id: str) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._stub(leases_grpc.LeasesStub).Delete(
                leases_pb2.DeleteRequest(id=lease_id),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )

    async def _create_task(self, sandbox_id: str) -> None:
        """tasks.Create with the snapshot's mounts; output appended to output.log."""
        mounts = await self._snapshot_mounts(sandbox_id)
        log = self.sandbox_dir(sandbox_id) / LOG_FILE
        await asyncio.to_thread(log.parent.mkdir, parents=True, exist_ok=True)
        # The runc shim's file:// IO: it creates the file and copies stdout *and* stderr
        # into the one path given as stdout.
        uri = "file://" + urllib.parse.quote(str(log))
        try:
            await self._tasks.Create(
                tasks_pb2.CreateTaskRequest(
                    container_id=sandbox_id, rootfs=mounts, stdout=uri, stderr=uri
                ),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                raise _error(err, f"create task {sandbox_id}") from err
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                # The shim ran `runc create`: a missing binary, a bad mount, a cgroup error...
                raise SandboxError(
                    "CreateFailed", f"create task {sandbox_id}: {err.details()}"
                ) from err

    async def start(self, sandbox_id: str) -> SandboxStatus:
        """Start the task. A running sandbox is left alone; an exited one is restarted with a
        new task (same container and filesystem). Raises SandboxError("NotFound") for a missing
        sandbox, ("StartFailed") when the runtime cannot start it.
        """
        if await self._get_container(sandbox_id) is None:
            raise SandboxError("NotFound", f"sandbox {sandbox_id} does not exist")
        task = await self._get_task(sandbox_id)
        if task is not None and task.status == task_pb2.STOPPED:
            await self._delete_task(sandbox_id)
            task = None
        if task is None:
            try:
                await self._create_task(sandbox_id)
            except SandboxError as err:
                if err.reason != "CreateFailed":
                    raise
                raise SandboxError("StartFailed", err.message) from err
        elif task.status != task_pb2.CREATED:
            return await self.status(sandbox_id)
        try:
            await self._tasks.Start(
                tasks_pb2.StartRequest(container_id=sandbox_id),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                raise _error(err, f"start {sandbox_id}") from err
            current = await self._get_task(sandbox_id)
            if current is not None and current.status == task_pb2.RUNNING:
                return await self.status(sandbox_id)  # a concurrent start won
            raise SandboxError("StartFailed", f"start {sandbox_id}: {err.details()}") from err
        return await self.status(sandbox_id)

    async def status(self, sandbox_id: str) -> SandboxStatus:
        """MISSING (no container), CREATED (no task, or task created), RUNNING (also paused),
        EXITED with `exit_code` (containerd's: 128+signal when killed by a signal)."""
        if await self._get_container(sandbox_id) is None:
            return SandboxStatus(sandbox_id, SandboxState.MISSING)
        task = await self._get_task(sandbox_id)
        if task is None:
            return SandboxStatus(sandbox_id, SandboxState.CREATED, message="no task")
        if task.status == task_pb2.CREATED:
            return SandboxStatus(sandbox_id, SandboxState.CREATED, pid=task.pid or None)
        if task.status in (task_pb2.RUNNING, task_pb2.PAUSED, task_pb2.PAUSING):
            message = "" if task.status == task_pb2.RUNNING else task_pb2.Status.Name(task.status)
            return SandboxStatus(sandbox_id, SandboxState.RUNNING, pid=task.pid, message=message)
        if task.status == task_pb2.STOPPED:
            return SandboxStatus(
                sandbox_id, SandboxState.EXITED, exit_code=task.exit_status, pid=task.pid or None
            )
        return SandboxStatus(sandbox_id, SandboxState.CREATED, message="task state unknown")

    async def probe(self, sandbox_id: str, probe: ProbeSpec) -> bool:
        """One readiness check; False unless the sandbox runs and the agent answers.

        http_port: GET http://127.0.0.1:<port><path> within timeout_s, 2xx/3xx → True; from the
        host for host-network runtime classes, else inside the sandbox with `wget`.
        heartbeat: the heartbeat file was modified within period_s * failure_threshold.
        exec_command: the command, run in the sandbox as the agent, exits 0 within timeout_s.
        """
        task = await self._get_task(sandbox_id)
        if task is None or task.status != task_pb2.RUNNING:
            return False
        if probe.exec_command:
            return await self._exec_ok(sandbox_id, probe.exec_command, probe.timeout_s)
        if probe.http_port is not None:
            path = probe.http_path if probe.http_path.startswith("/") else "/" + probe.http_path
            url = f"http://127.0.0.1:{probe.http_port}{path}"
            if await self._host_network(sandbox_id):
                return await self._http_ok(url, probe.timeout_s)
            # No `wget -T`: busybox 1.35's wget segfaults with it. The exec's own deadline
            # (timeout_s, then SIGKILL) bounds the request instead.
            cmd = ["wget", "-q", "-O", "/dev/null", url]
            return await self._exec_ok(sandbox_id, cmd, probe.timeout_s)
        if probe.heartbeat:
            hb = self.sandbox_dir(sandbox_id) / "agentos" / HEARTBEAT_FILE
            try:
                mtime = (await asyncio.to_thread(hb.stat)).st_mtime
            except FileNotFoundError:
                return False
            return time.time() - mtime <= probe.period_s * probe.failure_threshold
        raise SandboxError("ProbeUnsupported", "the probe names no action")

    async def _host_network(self, sandbox_id: str) -> bool:
        container = await self._get_container(sandbox_id)
        if container is None:
            return False
        spec = json.loads(container.spec.value or b"{}")
        namespaces = (spec.get("linux") or {}).get("namespaces") or []
        return all(ns.get("type") != "network" for ns in namespaces)

    async def _http_ok(self, url: str, timeout_s: float) -> bool:
        if self._http is None:
            self._http = httpx.AsyncClient(trust_env=False)
        try:
            resp = await self._http.get(url, timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return 200 <= resp.status_code < 400

    async def exec(self, sandbox_id: str, command: list[str], timeout_s: float) -> int | None:
        """Run `command` in the running sandbox as its agent (same user, env, cwd), without
        stdio; its exit code, or None if it did not finish within `timeout_s` (then killed).
        Raises SandboxError("NotFound") if the sandbox does not exist."""
        container = await self._get_container(sandbox_id)
        if container is None:
            raise SandboxError("NotFound", f"sandbox {sandbox_id} does not exist")
        main = (json.loads(container.spec.value or b"{}").get("process")) or {}
        process = {
            "terminal": False,
            "user": main.get("user", {"uid": 0, "gid": 0}),
            "args": list(command),
            "env": main.get("env", [f"PATH={DEFAULT_PATH}"]),
            "cwd": main.get("cwd", "/"),
            "capabilities": main.get("capabilities", {}),
            "noNewPrivileges": True,
        }
        exec_id = f"exec-{uuid.uuid4().hex[:12]}"
        md = self._md()
        try:
            await self._tasks.Exec(
                tasks_pb2.ExecProcessRequest(
                    container_id=sandbox_id,
                    exec_id=exec_id,
                    spec=any_pb2.Any(type_url=PROCESS_TYPE_URL, value=json.dumps(process).encode()),
                ),
                metadata=md,
                timeout=self.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            raise _error(err, f"exec in {sandbox_id}") from err
        try:
            await self._tasks.Start(
                tasks_pb2.StartRequest(container_id=sandbox_id, exec_id=exec_id),
                metadata=md,
                timeout=self.rpc_timeout_s,
            )
            try:
                waited = await self._tasks.Wait(
                    tasks_pb2.WaitRequest(container_id=sandbox_id, exec_id=exec_id),
                    metadata=md,
                    timeout=timeout_s,
                )
                return int(waited.exit_status)
            except grpc.aio.AioRpcError as err:
                if not _timed_out(err):
                    raise
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._tasks.Kill(
                    tasks_pb2.KillRequest(
                        container_id=sandbox_id, exec_id=exec_id, signal=signal.SIGKILL
                    ),
                    metadata=md,
                    timeout=self.rpc_timeout_s,
                )
                await self._tasks.Wait(
                    tasks_pb2.WaitRequest(container_id=sandbox_id, exec_id=exec_id),
                    metadata=md,
                    timeout=KILL_WAIT_S,
                )
            return None
        except grpc.aio.AioRpcError as err:
            raise _error(err, f"exec in {sandbox_id}") from err
        finally:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._tasks.DeleteProcess(
                    tasks_pb2.DeleteProcessRequest(container_id=sandbox_id, exec_id=exec_id),
                    metadata=md,
                    timeout=self.rpc_timeout_s,
                )

    async def _exec_ok(self, sandbox_id: str, command: list[str], timeout_s: float) -> bool:
        try:
            return await self.exec(sandbox_id, command, timeout_s) == 0
        except SandboxError as err:
            if err.reason == "RuntimeUnavailable":
                raise
            return False  # e.g. the command is not in the image, or the task just exited

    async def _kill(self, sandbox_id: str, sig: int) -> None:
        try:
            await self._tasks.Kill(
                tasks_pb2.KillRequest(container_id=sandbox_id, signal=sig, all=True),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            # NotFound: no task or the process is gone; FailedPrecondition: not running.
            if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise _error(err, f"kill {sandbox_id}") from err

    async def _wait_exit(self, sandbox_id: str, timeout_s: float) -> bool:
        """True once the task has exited (or is gone) within `timeout_s`."""
        try:
            await self._tasks.Wait(
                tasks_pb2.WaitRequest(container_id=sandbox_id),
                metadata=self._md(),
                timeout=max(timeout_s, 0.001),
            )
        except grpc.aio.AioRpcError as err:
            if _timed_out(err):
                return False
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise _error(err, f"wait for {sandbox_id}") from err
        return True

    async def stop(self, sandbox_id: str, timeout_s: float = 10.0) -> None:
        """SIGTERM to every process of the sandbox, SIGKILL after `timeout_s` seconds; returns
        once it has exited. No error if it is missing, not started or already exited."""
        task = await self._get_task(sandbox_id)
        if task is None or task.status in (task_pb2.STOPPED, task_pb2.CREATED):
            return
        await self._kill(sandbox_id, signal.SIGTERM)
        if await self._wait_exit(sandbox_id, timeout_s):
            return
        await self._kill(sandbox_id, signal.SIGKILL)
        await self._wait_exit(sandbox_id, KILL_WAIT_S)

    async def _delete_task(self, sandbox_id: str) -> None:
        try:
            await self._tasks.Delete(
                tasks_pb2.DeleteTaskRequest(container_id=sandbox_id),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise _error(err, f"delete task {sandbox_id}") from err

    async def remove(self, sandbox_id: str) -> None:
        """SIGKILL what still runs (call stop() first for a graceful end), then delete the
        task, the container, the snapshot and the sandbox folder. No error if missing."""
        container = await self._get_container(sandbox_id)
        task = await self._get_task(sandbox_id)
        if task is not None:
            # A task in "created" runs no agent code yet (runc and runsc hold it before exec),
            # so it is deleted without a signal: runsc 20221219 cannot signal a task that a
            # failed start left "created" ("cannot signal container ... in state created"),
            # which is what makes `ctr tasks delete -f` fail on it, but deletes it fine.
            if task.status not in (task_pb2.STOPPED, task_pb2.CREATED):
                try:
                    await self._kill(sandbox_id, signal.SIGKILL)
                except SandboxError as err:
                    if err.reason == "RuntimeUnavailable":
                        raise
                else:
                    await self._wait_exit(sandbox_id, KILL_WAIT_S)
            await self._delete_task(sandbox_id)
        if container is not None:
            try:
                await self._containers.Delete(
                    containers_pb2.DeleteContainerRequest(id=sandbox_id),
                    metadata=self._md(),
                    timeout=self.rpc_timeout_s,
                )
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise _error(err, f"delete container {sandbox_id}") from err
        await self._remove_snapshot(sandbox_id)
        await asyncio.to_thread(shutil.rmtree, self.sandbox_dir(sandbox_id), True)

    async def _remove_snapshot(self, key: str) -> None:
        try:
            await self._snapshots.Remove(
                snapshots_pb2.RemoveSnapshotRequest(snapshotter=self.snapshotter, key=key),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise _error(err, f"remove snapshot {key}") from err

    async def logs(self, sandbox_id: str, tail_lines: int = 100) -> str:
        """The last `tail_lines` lines of the sandbox's stdout and stderr, interleaved as
        written ("" if none)."""
        path = self.sandbox_dir(sandbox_id) / LOG_FILE
        return await asyncio.to_thread(_tail, path, tail_lines)

    async def list_sandboxes(self) -> dict[str, str]:
        """Containers labelled agentos.io/managed=true in our namespace: id → agent id."""
        try:
            resp = await self._containers.List(
                containers_pb2.ListContainersRequest(filters=[f'labels."{LABEL_MANAGED}"==true']),
                metadata=self._md(),
                timeout=self.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            raise _error(err, "list containers") from err
        return {c.id: c.labels.get(LABEL_AGENT_ID, "") for c in resp.containers}

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def _tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a file, read backwards in blocks ("" if missing)."""
    if lines <= 0:
        return ""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            pos, data = end, b""
            while pos > 0 and data.count(b"\n") <= lines:
                step = min(64 * 1024, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return ""
    text = data.decode(errors="replace")
    parts = text.splitlines(keepends=True)
    return "".join(parts[-lines:])

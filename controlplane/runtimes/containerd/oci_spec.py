"""The OCI runtime spec of a sandbox (runtime-spec 1.0, the `config.json` shape) and the
runtime classes it runs under.

What the agent gets: the image's entrypoint, cmd, env, user and workdir with Kubernetes'
command/args semantics over them; a small capability set (Docker's default without NET_RAW,
MKNOD, SYS_CHROOT, AUDIT_WRITE, SETFCAP; effective only for root); no new privileges; the
usual /proc, /dev, /sys, /run mounts; its folder `agentos/` bind-mounted at `/agentos`
(`config.json`, the heartbeat file); CPU and memory limits on the cgroup
`/<namespace>/<sandbox_id>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2

from controlplane.runtimes.base import SandboxError, SandboxSpec
from controlplane.runtimes.containerd.api import containerd_runc_options_pb2 as runc_options_pb2
from controlplane.runtimes.containerd.api import containerd_types_pb2 as types_pb2

# typeurl names containerd and its runc shim decode.
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options"
RUNC_V2 = "io.containerd.runc.v2"

# Inside the sandbox.
AGENTOS_MOUNT = "/agentos"
CONFIG_FILE = "config.json"
HEARTBEAT_FILE = "heartbeat"

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
MASKED_PATHS = [
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
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


@dataclass(frozen=True)
class RuntimeClass:
    """How one runtime class (`SandboxSpec.runtime_class`) maps onto containerd.

    `runtime`: containerd runtime (shim) name, e.g. `io.containerd.runc.v2`.
    `binary_name`: runc option BinaryName, a runc-compatible binary for the runc v2 shim (e.g.
    a runsc wrapper); "" for the shim's default (`runc` on its PATH).
    `host_network`: without sandbox networking (network.py), share the host's network
    namespace (HTTP probes from the host); else the sandbox gets an empty one of its own and
    HTTP probes run inside it. With sandbox networking every class joins its own namespace on
    the bridge and is probed from the host by its address.
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
class ImageConfig:
    """What a sandbox needs from an image config (OCI image spec `config`)."""

    ref: str
    chain_id: str  # "" for an image without layers
    entrypoint: list[str]
    cmd: list[str]
    env: list[str]
    user: str
    workdir: str


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
    group gets its passwd entry's primary group, else 0 (as containerd does). Raises
    SandboxError("InvalidImage") for a name the image does not know.
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
    image: ImageConfig,
    uid: int,
    gid: int,
    sandbox_dir: Path,
    namespace: str,
    netns: str | None,
) -> dict[str, Any]:
    """The OCI runtime spec (config.json shape, runtime-spec 1.0) for one sandbox.

    Limits: cpu_millis → CFS quota over a 100 ms period (500 → 50 000 µs, at least 1 000 µs,
    the kernel's minimum); memory_bytes → memory limit in bytes; 0 means no limit. They are
    limits on the sandbox's cgroup `/<namespace>/<sandbox_id>` (cgroupfs driver). runc puts
    the agent's processes there. runsc, as hack/services.d/30-containerd.sh runs it (without
    `--ignore-cgroups`), puts its sandbox process (the Sentry, which runs all of the agent's
    code) there, so the limits hold for gVisor too; the integration test reads them from the
    cgroup of the task's pid for both. On a host where runsc must run with `--ignore-cgroups`
    they would not be enforced by cgroups at all. `netns`: the network namespace to join (a
    path, network.py), "" for a new empty one, None to share the host's. Raises
    SandboxError("InvalidSpec") when neither the image nor the spec gives a command.
    """
    namespaces: list[dict[str, str]] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if netns is not None:
        namespaces.append({"type": "network", **({"path": netns} if netns else {})})
    hostname = "".join(c if c.isalnum() or c in "-." else "-" for c in spec.name)[:63].strip("-.")
    return {
        "ociVersion": "1.0.2-dev",
        "process": _process(spec, image, uid, gid),
        "root": {"path": "rootfs", "readonly": False},
        "hostname": hostname or "agent",
        "mounts": _mounts(sandbox_dir),
        "linux": {
            "resources": _resources(spec),
            "cgroupsPath": f"/{namespace}/{spec.sandbox_id}",
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def _process(spec: SandboxSpec, image: ImageConfig, uid: int, gid: int) -> dict[str, Any]:
    """The agent's process: argv, env (PATH, the image's, the spec's, ours), user, caps."""
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
    return {
        "terminal": False,
        "user": {"uid": uid, "gid": gid},
        "args": args,
        "env": env,
        "cwd": image.workdir or "/",
        "capabilities": {"bounding": caps, "effective": granted, "permitted": granted},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    }


def _resources(spec: SandboxSpec) -> dict[str, Any]:
    """The cgroup limits (see build_oci_spec) and no device access."""
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if spec.cpu_millis > 0:
        resources["cpu"] = {
            "quota": max(1000, spec.cpu_millis * CPU_PERIOD_US // 1000),
            "period": CPU_PERIOD_US,
        }
    if spec.memory_bytes > 0:
        resources["memory"] = {"limit": spec.memory_bytes}
    return resources


def _mounts(sandbox_dir: Path) -> list[dict[str, Any]]:
    tmpfs = ["nosuid", "strictatime", "mode=755", "size=65536k"]
    return [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", tmpfs),
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
        _mount("/run", "tmpfs", "tmpfs", list(tmpfs)),
        _mount(AGENTOS_MOUNT, "bind", str(sandbox_dir / "agentos"), ["rbind", "rw"]),
    ]


def _mount(dest: str, type_: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": dest, "type": type_, "source": source, "options": options}


def exec_process(oci: dict[str, Any], command: Sequence[str]) -> dict[str, Any]:
    """The OCI process for `command` run beside the agent of runtime spec `oci`: the agent's
    user, env, cwd and capabilities, no terminal, no new privileges."""
    main = oci.get("process") or {}
    return {
        "terminal": False,
        "user": main.get("user", {"uid": 0, "gid": 0}),
        "args": list(command),
        "env": main.get("env", [f"PATH={DEFAULT_PATH}"]),
        "cwd": main.get("cwd", "/"),
        "capabilities": main.get("capabilities", {}),
        "noNewPrivileges": True,
    }


def shares_host_network(oci: dict[str, Any]) -> bool:
    """True if runtime spec `oci` asks for no network namespace of its own."""
    namespaces = (oci.get("linux") or {}).get("namespaces") or []
    return all(ns.get("type") != "network" for ns in namespaces)

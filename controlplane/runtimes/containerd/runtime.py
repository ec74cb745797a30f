"""The containerd runtime (ADR 0004, ADR 0009): sandboxes are containerd containers and tasks.

`ContainerdRuntime` talks to containerd's own gRPC API (v1, containerd 1.6) with grpc.aio and
our generated stubs (`containerd/api`, see its `proto/`); it never shells out to `ctr`. Every
call carries the `containerd-namespace` metadata header (`connection.py`).

One sandbox is:
- a container `<sandbox_id>` (labels from `SandboxSpec.labels()`, the OCI runtime spec as
  JSON (`oci_spec.py`), the runtime of its runtime class, snapshotter and snapshot key
  `<sandbox_id>`);
- an active snapshot `<sandbox_id>` on the image's unpacked layers (parent: the chain ID of the
  image config's `rootfs.diff_ids`; `snapshots.py`, `images.py`);
- a task (the running process tree), its stdout and stderr appended to `<dir>/output.log` by
  containerd's runc shim (`file://` IO; `tasks.py`);
- a host folder `<state_dir>/<sandbox_id>/` with `output.log` and `agentos/` (`config.json`,
  the heartbeat file), the latter bind-mounted read-write at `/agentos` in the sandbox.

Networking (`network.py`, architecture/networking.md): with AGENTOS_SANDBOX_NETWORK=cni (the
default) every sandbox, runc and gVisor alike, joins a network namespace of its own with an
address on the bridge `agentos0` (label `agentos.io/address` on the container); HTTP probes go
from the host to that address, so two agents may listen on one port. The host's firewall lets
a sandbox reach only the gateway's and the egress proxy's ports. gVisor runs its own network
stack there (`runsc --network=sandbox`, through the wrapper hack/services.d/30-containerd.sh
writes). With AGENTOS_SANDBOX_NETWORK=none (a host without CNI): runc shares the host's
network namespace (no isolation; probes on 127.0.0.1) and gVisor gets an empty namespace with
only its own loopback (probes run inside it with `wget`).

Runtime classes (`RuntimeClass`): `runc` is containerd's `io.containerd.runc.v2`; `gvisor` is
runsc through the runc v2 shim, by runtime name (`io.containerd.gvisor.v2` from
hack/services.d/30-containerd.sh) or by runc option BinaryName (a runsc wrapper).

Images: already in containerd and unpacked for the configured snapshotter, or a local OCI
archive `oci-archive:/abs/path.tar` that `create` imports through the API on first use (see
`images.py`). Pulling from a registry is not done here.

Errors: every failure is a `SandboxError` with a CamelCase `reason`: `RuntimeUnavailable`
(containerd does not answer), `ImageNotFound`, `ImageNotUnpacked`, `InvalidImage`,
`InvalidSpec`, `UnknownRuntimeClass`, `CreateFailed` (the runtime refused the task, e.g. runc
finds no such binary), `StartFailed`, `NotFound`, `NetworkUnavailable` (no CNI plugin, `ip`
or `nft`), `NetworkError` (they failed), `ContainerdError` (anything else).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from pathlib import Path

import httpx
from google.protobuf import any_pb2

from controlplane.runtimes.base import (
    LABEL_ADDRESS,
    LABEL_AGENT_ID,
    LABEL_MANAGED,
    ProbeSpec,
    SandboxError,
    SandboxSpec,
    SandboxState,
    SandboxStatus,
)
from controlplane.runtimes.containerd.api import containerd_containers_pb2 as containers_pb2
from controlplane.runtimes.containerd.api import containerd_task_pb2 as task_pb2
from controlplane.runtimes.containerd.connection import (
    ALREADY_EXISTS,
    NOT_FOUND,
    RPC_TIMEOUT_S,
    Connection,
)
from controlplane.runtimes.containerd.images import ImageStore
from controlplane.runtimes.containerd.network import NetworkSettings, SandboxNetwork
from controlplane.runtimes.containerd.oci_archive import archive_path
from controlplane.runtimes.containerd.oci_spec import (
    CONFIG_FILE,
    HEARTBEAT_FILE,
    RUNC_V2,
    SPEC_TYPE_URL,
    RuntimeClass,
    build_oci_spec,
    exec_process,
    resolve_user,
    shares_host_network,
)
from controlplane.runtimes.containerd.snapshots import Leases, Snapshots
from controlplane.runtimes.containerd.suspend import Suspension, sweep_images
from controlplane.runtimes.containerd.suspender import Suspender
from controlplane.runtimes.containerd.tasks import KILL_WAIT_S, Tasks
from controlplane.runtimes.probes import heartbeat_fresh, http_get_ok, probe_url

DEFAULT_STATE_DIR = Path("/var/lib/agentos/sandboxes")
DEFAULT_NAMESPACE = "agentos"
DEFAULT_SNAPSHOTTER = "overlayfs"
LOG_FILE = "output.log"

__all__ = ["ContainerdRuntime", "RuntimeClass"]


class ContainerdRuntime:
    """Sandboxes as containerd containers (see the module docstring).

    `address`: containerd's gRPC socket path (or `unix://...`). `namespace`: the containerd
    namespace every object lives in. `snapshotter`: where images are unpacked (overlayfs,
    native, ...). `runtimes`: runtime class name (`runc`, `gvisor`) → `RuntimeClass`.
    `state_dir`: the host folder for per-sandbox folders. `rpc_timeout_s`: deadline of one
    containerd call, seconds. `network`: sandbox networking (None: see the module docstring).
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
        network: NetworkSettings | None = None,
    ) -> None:
        self._conn = Connection(address, namespace, rpc_timeout_s)
        self.network = SandboxNetwork(network, namespace) if network is not None else None
        self.address = self._conn.address
        self.namespace = namespace
        self.snapshotter = snapshotter
        self.runtimes = dict(runtimes) if runtimes is not None else {"runc": RuntimeClass()}
        self.state_dir = Path(state_dir)
        self.rpc_timeout_s = rpc_timeout_s
        self._snapshots = Snapshots(self._conn, snapshotter)
        self._leases = Leases(self._conn)
        self._images = ImageStore(self._conn, self._snapshots, self._leases)
        self._tasks = Tasks(self._conn)
        self._suspender = Suspender(
            self, self._conn, self._get_container, self._tasks, self._snapshots
        )
        self._http: httpx.AsyncClient | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ContainerdRuntime:
        """Settings from the environment (the variables `.services/env` holds).

        CONTAINERD_ADDRESS (required), CONTAINERD_NAMESPACE (default "agentos"),
        CONTAINERD_SNAPSHOTTER (default "overlayfs"), AGENTOS_RUNC_RUNTIME (default
        io.containerd.runc.v2), AGENTOS_RUNSC_BINARY (gVisor as the runc shim's BinaryName; it
        can suspend) or else AGENTOS_RUNSC_RUNTIME (gVisor by runtime name), AGENTOS_SANDBOX_DIR
        (default /var/lib/agentos/sandboxes).
        Without either runsc variable there is no `gvisor` runtime class.
        """
        env = dict(os.environ) if env is None else env
        address = env.get("CONTAINERD_ADDRESS", "")
        if not address:
            raise SandboxError("RuntimeUnavailable", "CONTAINERD_ADDRESS is not set")
        runsc_binary = env.get("AGENTOS_RUNSC_BINARY", "")
        runtimes = {"runc": RuntimeClass(runtime=env.get("AGENTOS_RUNC_RUNTIME") or RUNC_V2)}
        # BinaryName first: containerd 1.6 checkpoints only runtimes named io.containerd.runc.*,
        # so only that route can suspend (adr/0019-suspend-resume.md).
        if runsc_binary:
            runtimes["gvisor"] = RuntimeClass(
                runtime=RUNC_V2,
                binary_name=runsc_binary,
                host_network=False,
            )
        elif env.get("AGENTOS_RUNSC_RUNTIME"):
            runtimes["gvisor"] = RuntimeClass(
                runtime=env["AGENTOS_RUNSC_RUNTIME"],
                host_network=False,
            )
        return cls(
            address,
            env.get("CONTAINERD_NAMESPACE") or DEFAULT_NAMESPACE,
            snapshotter=env.get("CONTAINERD_SNAPSHOTTER") or DEFAULT_SNAPSHOTTER,
            runtimes=runtimes,
            state_dir=Path(env.get("AGENTOS_SANDBOX_DIR") or DEFAULT_STATE_DIR),
            network=_network_settings(env),
        )

    def sandbox_dir(self, sandbox_id: str) -> Path:
        """The host folder of one sandbox: output.log, agentos/config.json, agentos/heartbeat."""
        if not sandbox_id or "/" in sandbox_id or sandbox_id in {".", ".."}:
            raise SandboxError("InvalidSpec", f"invalid sandbox id {sandbox_id!r}")
        return self.state_dir / sandbox_id

    def agent_folder(self, sandbox_id: str) -> Path:
        """The host folder the sandbox sees at `/agentos` (runtimes/capabilities.py)."""
        return self.sandbox_dir(sandbox_id) / "agentos"

    async def import_archive(self, path: Path) -> str:
        """Import the OCI archive at `path` (see `images.py`); returns the image name.
        Idempotent and cheap once done (one images.Get). Raises SandboxError (InvalidImage,
        ContainerdError, RuntimeUnavailable)."""
        return await self._images.import_archive(path)

    async def _get_container(self, sandbox_id: str) -> containers_pb2.Container | None:
        resp = await self._conn.call(
            self._conn.containers.Get,
            containers_pb2.GetContainerRequest(id=sandbox_id),
            f"get container {sandbox_id}",
            tolerate=NOT_FOUND,
        )
        if resp is None:
            return None
        container: containers_pb2.Container = resp.container
        return container

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
        if await self._get_container(spec.sandbox_id) is None:
            address = await self.network.attach(spec.sandbox_id) if self.network else None
            try:
                await self._create_container(spec, rc, sandbox_dir, address)
            except BaseException:
                if self.network is not None:  # no container holds the attachment
                    await self.network.detach(spec.sandbox_id)
                raise
        if await self._tasks.get(spec.sandbox_id) is None:
            await self._create_task(spec.sandbox_id)
        return await self.status(spec.sandbox_id)

    async def _create_container(
        self, spec: SandboxSpec, rc: RuntimeClass, folder: Path, address: str | None
    ) -> None:
        """The image (imported first if an archive), the snapshot, the folder and the
        container, all under a lease that ends when the container holds them. `address`: the
        sandbox's on the bridge (None without sandbox networking)."""
        archive = archive_path(spec.image)
        ref = spec.image if archive is None else await self.import_archive(archive)
        image = await self._images.resolve(ref)
        lease = await self._leases.create_expiring(spec.sandbox_id)
        try:
            mounts = await self._snapshots.prepare(spec.sandbox_id, image.chain_id, lease)
            uid, gid = await asyncio.to_thread(resolve_user, image.user, mounts)
            await asyncio.to_thread(self._write_files, spec, uid, gid)
            oci = build_oci_spec(
                spec, image, uid, gid, folder, self.namespace, self._netns(spec.sandbox_id, rc)
            )
            labels = spec.labels() | ({LABEL_ADDRESS: address} if address else {})
            container = containers_pb2.Container(
                id=spec.sandbox_id,
                labels=labels,
                image=image.ref,
                runtime=containers_pb2.Container.Runtime(name=rc.runtime),
                spec=any_pb2.Any(type_url=SPEC_TYPE_URL, value=json.dumps(oci).encode()),
                snapshotter=self.snapshotter,
                snapshot_key=spec.sandbox_id,
            )
            if (options := rc.options()) is not None:
                container.runtime.options.CopyFrom(options)
            await self._conn.call(
                self._conn.containers.Create,
                containers_pb2.CreateContainerRequest(container=container),
                f"create container {spec.sandbox_id}",
                lease=lease,
                tolerate=ALREADY_EXISTS,
            )
        finally:
            await self._leases.delete(lease)

    def _netns(self, sandbox_id: str, rc: RuntimeClass) -> str | None:
        """The network namespace the sandbox joins (see build_oci_spec)."""
        if self.network is not None:
            return str(self.network.netns_path(sandbox_id))
        return None if rc.host_network else ""

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

    async def _create_task(self, sandbox_id: str) -> None:
        """tasks.Create with the snapshot's mounts; output appended to output.log."""
        mounts = await self._snapshots.mounts(sandbox_id)
        await self._tasks.create(sandbox_id, mounts, self.sandbox_dir(sandbox_id) / LOG_FILE)

    async def start(self, sandbox_id: str) -> SandboxStatus:
        """Start the task. A running sandbox is left alone; an exited one is restarted with a
        new task (same container and filesystem). Raises SandboxError("NotFound") for a missing
        sandbox, ("StartFailed") when the runtime cannot start it.
        """
        if await self._get_container(sandbox_id) is None:
            raise SandboxError("NotFound", f"sandbox {sandbox_id} does not exist")
        task = await self._tasks.get(sandbox_id)
        if task is not None and task.status == task_pb2.STOPPED:
            await self._tasks.delete(sandbox_id)
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
        await self._tasks.start(sandbox_id)
        return await self.status(sandbox_id)

    async def status(self, sandbox_id: str) -> SandboxStatus:
        """MISSING (no container), CREATED (no task, or task created), RUNNING (also paused),
        EXITED with `exit_code` (containerd's: 128+signal when killed by a signal)."""
        if await self._get_container(sandbox_id) is None:
            return SandboxStatus(sandbox_id, SandboxState.MISSING)
        task = await self._tasks.get(sandbox_id)
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

        http_port: GET http://<address>:<port><path> within timeout_s, 2xx/3xx → True, from
        the host to the sandbox's bridge address; without sandbox networking to 127.0.0.1 for
        host-network runtime classes, else inside the sandbox with `wget`.
        heartbeat: the heartbeat file was modified within period_s * failure_threshold.
        exec_command: the command, run in the sandbox as the agent, exits 0 within timeout_s.
        """
        task = await self._tasks.get(sandbox_id)
        if task is None or task.status != task_pb2.RUNNING:
            return False
        if probe.exec_command:
            return await self._exec_ok(sandbox_id, probe.exec_command, probe.timeout_s)
        if probe.http_port is not None:
            host = await self._probe_host(sandbox_id)
            if host is not None:
                if self._http is None:
                    self._http = httpx.AsyncClient(trust_env=False)
                return await http_get_ok(
                    probe.http_port, probe.http_path, probe.timeout_s, self._http, host
                )
            # No `wget -T`: busybox 1.35's wget segfaults with it. The exec's own deadline
            # (timeout_s, then SIGKILL) bounds the request instead.
            url = probe_url(probe.http_port, probe.http_path)
            return await self._exec_ok(
                sandbox_id, ["wget", "-q", "-O", "/dev/null", url], probe.timeout_s
            )
        if probe.heartbeat:
            heartbeat = self.sandbox_dir(sandbox_id) / "agentos" / HEARTBEAT_FILE
            max_age_s = probe.period_s * probe.failure_threshold
            return await asyncio.to_thread(heartbeat_fresh, heartbeat, max_age_s)
        raise SandboxError("ProbeUnsupported", "the probe names no action")

    async def _probe_host(self, sandbox_id: str) -> str | None:
        """Where the host reaches the sandbox: its bridge address, 127.0.0.1 if it shares the
        host's network, None if the host cannot (probe inside)."""
        container = await self._get_container(sandbox_id)
        if container is None:
            return None
        if address := container.labels.get(LABEL_ADDRESS):
            return str(address)
        if shares_host_network(json.loads(container.spec.value or b"{}")):
            return "127.0.0.1"
        return None

    async def sandbox_address(self, sandbox_id: str) -> str | None:
        """The sandbox's address on the bridge (None without sandbox networking or sandbox)."""
        container = await self._get_container(sandbox_id)
        if container is None or LABEL_ADDRESS not in container.labels:
            return None
        return str(container.labels[LABEL_ADDRESS])

    async def exec(self, sandbox_id: str, command: list[str], timeout_s: float) -> int | None:
        """Run `command` in the running sandbox as its agent (same user, env, cwd), without
        stdio; its exit code, or None if it did not finish within `timeout_s` (then killed).
        Raises SandboxError("NotFound") if the sandbox does not exist."""
        container = await self._get_container(sandbox_id)
        if container is None:
            raise SandboxError("NotFound", f"sandbox {sandbox_id} does not exist")
        process = exec_process(json.loads(container.spec.value or b"{}"), command)
        return await self._tasks.exec(sandbox_id, process, timeout_s)

    async def _exec_ok(self, sandbox_id: str, command: list[str], timeout_s: float) -> bool:
        try:
            return await self.exec(sandbox_id, command, timeout_s) == 0
        except SandboxError as err:
            if err.reason == "RuntimeUnavailable":
                raise
            return False  # e.g. the command is not in the image, or the task just exited

    async def stop(self, sandbox_id: str, timeout_s: float = 10.0) -> None:
        """SIGTERM to every process of the sandbox, SIGKILL after `timeout_s` seconds; returns
        once it has exited. No error if it is missing, not started or already exited."""
        task = await self._tasks.get(sandbox_id)
        if task is None or task.status in (task_pb2.STOPPED, task_pb2.CREATED):
            return
        await self._tasks.kill(sandbox_id, signal.SIGTERM)
        if await self._tasks.wait_exit(sandbox_id, timeout_s):
            return
        await self._tasks.kill(sandbox_id, signal.SIGKILL)
        await self._tasks.wait_exit(sandbox_id, KILL_WAIT_S)

    async def remove(self, sandbox_id: str) -> None:
        """SIGKILL what still runs (call stop() first for a graceful end), then delete the
        task, the container, the snapshot, the network attachment and the sandbox folder. No
        error if missing."""
        container = await self._get_container(sandbox_id)
        task = await self._tasks.get(sandbox_id)
        if task is not None:
            # A task in "created" runs no agent code yet (runc and runsc hold it before exec),
            # so it is deleted without a signal: runsc 20221219 cannot signal a task that a
            # failed start left "created" ("cannot signal container ... in state created"),
            # which is what makes `ctr tasks delete -f` fail on it, but deletes it fine.
            if task.status not in (task_pb2.STOPPED, task_pb2.CREATED):
                try:
                    await self._tasks.kill(sandbox_id, signal.SIGKILL)
                except SandboxError as err:
                    if err.reason == "RuntimeUnavailable":
                        raise
                else:
                    await self._tasks.wait_exit(sandbox_id, KILL_WAIT_S)
            await self._tasks.delete(sandbox_id)
        if container is not None:
            await self._conn.call(
                self._conn.containers.Delete,
                containers_pb2.DeleteContainerRequest(id=sandbox_id),
                f"delete container {sandbox_id}",
                tolerate=NOT_FOUND,
            )
        await self._snapshots.remove(sandbox_id)
        if self.network is not None:
            await self.network.detach(sandbox_id)
        await asyncio.to_thread(shutil.rmtree, self.sandbox_dir(sandbox_id), True)

    async def suspend(self, sandbox_id: str) -> Suspension:
        """Suspend the sandbox: gVisor checkpoints memory and files, runc keeps files only;
        no process is left (suspender.py). Idempotent. Raises SandboxError (NotFound,
        SuspendUnsupported, CheckpointFailed: the sandbox keeps running)."""
        return await self._suspender.suspend(sandbox_id)

    async def resume(self, sandbox_id: str) -> SandboxStatus:
        """Resume a suspended sandbox (suspender.py); a running one is left alone. Raises
        SandboxError (NotFound, RestoreFailed, StartFailed)."""
        return await self._suspender.resume(sandbox_id)

    async def sweep(self, keep: set[str]) -> int:
        """Remove network namespaces, address leases, firewall elements and checkpoint images
        of this namespace that belong to no sandbox in `keep` (what a crash between steps
        leaves). Returns how many sandboxes' leftovers were removed."""
        images = await asyncio.to_thread(sweep_images, self.state_dir, self.namespace, keep)
        if self.network is None:
            return images
        return images + await self.network.sweep(keep)

    async def logs(self, sandbox_id: str, tail_lines: int = 100) -> str:
        """The last `tail_lines` lines of the sandbox's stdout and stderr, interleaved as
        written ("" if none)."""
        path = self.sandbox_dir(sandbox_id) / LOG_FILE
        return await asyncio.to_thread(_tail, path, tail_lines)

    async def list_sandboxes(self) -> dict[str, str]:
        """Containers labelled agentos.io/managed=true in our namespace: id → agent id."""
        resp = await self._conn.call(
            self._conn.containers.List,
            containers_pb2.ListContainersRequest(filters=[f'labels."{LABEL_MANAGED}"==true']),
            "list containers",
        )
        return {c.id: c.labels.get(LABEL_AGENT_ID, "") for c in resp.containers}

    async def close(self) -> None:
        await self._suspender.close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        await self._conn.close()


def _network_settings(env: dict[str, str]) -> NetworkSettings | None:
    mode = env.get("AGENTOS_SANDBOX_NETWORK") or "cni"
    if mode == "none":
        return None
    if mode != "cni":
        raise SandboxError("InvalidSpec", f"AGENTOS_SANDBOX_NETWORK must be cni or none: {mode!r}")
    return NetworkSettings.from_env(env)


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

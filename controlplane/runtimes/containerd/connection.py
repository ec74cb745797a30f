"""One gRPC channel to containerd, with the namespace header, deadlines and error mapping.

Every call carries the `containerd-namespace` metadata header (and, while an object is being
made, `containerd-lease`), so everything lives in one containerd namespace and nothing made
under a lease is garbage-collected before it is referenced.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import grpc
import grpc.aio

from controlplane.runtimes.base import SandboxError
from controlplane.runtimes.containerd.api import containerd_containers_pb2_grpc as containers_grpc
from controlplane.runtimes.containerd.api import containerd_content_pb2_grpc as content_grpc
from controlplane.runtimes.containerd.api import containerd_diff_pb2_grpc as diff_grpc
from controlplane.runtimes.containerd.api import containerd_images_pb2_grpc as images_grpc
from controlplane.runtimes.containerd.api import containerd_leases_pb2_grpc as leases_grpc
from controlplane.runtimes.containerd.api import containerd_snapshots_pb2_grpc as snapshots_grpc
from controlplane.runtimes.containerd.api import containerd_tasks_pb2_grpc as tasks_grpc

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"
RPC_TIMEOUT_S = 30.0  # one containerd call (task create under gVisor boots a sandbox)

NOT_FOUND = (grpc.StatusCode.NOT_FOUND,)
ALREADY_EXISTS = (grpc.StatusCode.ALREADY_EXISTS,)


def timed_out(err: grpc.aio.AioRpcError) -> bool:
    """The call's deadline passed: seen here, or by containerd first (then it answers
    UNKNOWN "context deadline exceeded")."""
    if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return True
    return err.code() == grpc.StatusCode.UNKNOWN and "deadline exceeded" in (err.details() or "")


def containerd_error(err: grpc.aio.AioRpcError, what: str) -> SandboxError:
    """`RuntimeUnavailable` when containerd does not answer, else `ContainerdError`."""
    if err.code() == grpc.StatusCode.UNAVAILABLE:
        return SandboxError(
            "RuntimeUnavailable", f"containerd does not answer ({what}): {err.details()}"
        )
    return SandboxError("ContainerdError", f"{what}: {err.code().name}: {err.details()}")


class Connection:
    """containerd's gRPC API at `address` (a socket path or `unix://...`), in `namespace`;
    `rpc_timeout_s` is the deadline of one call, in seconds. The channel opens on first use."""

    def __init__(self, address: str, namespace: str, rpc_timeout_s: float = RPC_TIMEOUT_S) -> None:
        self.address = address if "://" in address else f"unix://{address}"
        self.namespace = namespace
        self.rpc_timeout_s = rpc_timeout_s
        self._metadata = ((NAMESPACE_HEADER, namespace),)
        self._channel: grpc.aio.Channel | None = None

    def metadata(self, lease: str = "") -> tuple[tuple[str, str], ...]:
        """The call metadata: the namespace, and `lease` if given."""
        return (*self._metadata, (LEASE_HEADER, lease)) if lease else self._metadata

    def _stub(self, stub_class: Any) -> Any:
        """A stub of a generated service (grpcio-tools writes them untyped)."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address)
        return stub_class(self._channel)

    @property
    def containers(self) -> Any:
        return self._stub(containers_grpc.ContainersStub)

    @property
    def tasks(self) -> Any:
        return self._stub(tasks_grpc.TasksStub)

    @property
    def snapshots(self) -> Any:
        return self._stub(snapshots_grpc.SnapshotsStub)

    @property
    def content(self) -> Any:
        return self._stub(content_grpc.ContentStub)

    @property
    def images(self) -> Any:
        return self._stub(images_grpc.ImagesStub)

    @property
    def leases(self) -> Any:
        return self._stub(leases_grpc.LeasesStub)

    @property
    def diff(self) -> Any:
        return self._stub(diff_grpc.DiffStub)

    async def call(
        self,
        rpc: Any,
        request: Any,
        what: str,
        *,
        lease: str = "",
        timeout_s: float | None = None,
        tolerate: Collection[grpc.StatusCode] = (),
    ) -> Any:
        """One unary call `rpc(request)` with our metadata and deadline (`timeout_s`, else
        `rpc_timeout_s`). Returns the response, or None when containerd answers a code in
        `tolerate` (e.g. NOT_FOUND for a lookup). Raises SandboxError (RuntimeUnavailable,
        ContainerdError) naming `what` for any other error."""
        try:
            return await rpc(
                request,
                metadata=self.metadata(lease),
                timeout=self.rpc_timeout_s if timeout_s is None else timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() in tolerate:
                return None
            raise containerd_error(err, what) from err

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

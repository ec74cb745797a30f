"""Snapshots (a sandbox's root filesystem, an image's unpacked layers) and the leases that
keep what is being made safe from containerd's garbage collector.

A sandbox's snapshot is the active snapshot `<sandbox_id>` whose parent is the committed
snapshot of the image's layers, named by their chain ID. A lease `agentos-create-...` covers
the making of one sandbox and expires by itself in 10 minutes should we crash before deleting
it; `agentos-image-<digest>` pins an imported image for good.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from typing import Any

import grpc
import grpc.aio

from controlplane.runtimes.base import SandboxError
from controlplane.runtimes.containerd.api import containerd_leases_pb2 as leases_pb2
from controlplane.runtimes.containerd.api import containerd_snapshots_pb2 as snapshots_pb2
from controlplane.runtimes.containerd.connection import (
    ALREADY_EXISTS,
    NOT_FOUND,
    Connection,
    containerd_error,
)

GC_EXPIRE_LABEL = "containerd.io/gc.expire"
CREATE_LEASE_TTL = dt.timedelta(minutes=10)


class Snapshots:
    """The snapshots of one snapshotter (overlayfs, native, ...) over `conn`."""

    def __init__(self, conn: Connection, snapshotter: str) -> None:
        self._conn = conn
        self.snapshotter = snapshotter

    async def prepare(self, key: str, parent: str, lease: str) -> list[Any]:
        """An active snapshot `key` on `parent`; its mounts (an existing one: as it is).
        Raises SandboxError("ImageNotUnpacked") when `parent` is not there."""
        try:
            resp = await self._conn.snapshots.Prepare(
                snapshots_pb2.PrepareSnapshotRequest(
                    snapshotter=self.snapshotter, key=key, parent=parent
                ),
                metadata=self._conn.metadata(lease),
                timeout=self._conn.rpc_timeout_s,
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
                raise containerd_error(err, f"prepare snapshot {key}") from err
        return await self.mounts(key)

    async def mounts(self, key: str) -> list[Any]:
        """The mounts that make up the active snapshot `key`."""
        resp = await self._conn.call(
            self._conn.snapshots.Mounts,
            snapshots_pb2.MountsRequest(snapshotter=self.snapshotter, key=key),
            f"mounts of snapshot {key}",
        )
        return list(resp.mounts)

    async def commit(self, name: str, key: str, lease: str) -> None:
        """Commit the active snapshot `key` as `name` (raw gRPC errors pass through)."""
        await self._conn.snapshots.Commit(
            snapshots_pb2.CommitSnapshotRequest(snapshotter=self.snapshotter, name=name, key=key),
            metadata=self._conn.metadata(lease),
            timeout=self._conn.rpc_timeout_s,
        )

    async def exists(self, key: str) -> bool:
        resp = await self._conn.call(
            self._conn.snapshots.Stat,
            snapshots_pb2.StatSnapshotRequest(snapshotter=self.snapshotter, key=key),
            f"stat snapshot {key}",
            tolerate=NOT_FOUND,
        )
        return resp is not None

    async def remove(self, key: str) -> None:
        """Remove snapshot `key`; no error if it is missing."""
        await self._conn.call(
            self._conn.snapshots.Remove,
            snapshots_pb2.RemoveSnapshotRequest(snapshotter=self.snapshotter, key=key),
            f"remove snapshot {key}",
            tolerate=NOT_FOUND,
        )


class Leases:
    """containerd leases over `conn`."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def create_expiring(self, sandbox_id: str) -> str:
        """A lease for making one sandbox that expires by itself in 10 minutes."""
        expire = dt.datetime.now(dt.UTC) + CREATE_LEASE_TTL
        lease_id = f"agentos-create-{sandbox_id}-{uuid.uuid4().hex[:8]}"
        await self._conn.call(
            self._conn.leases.Create,
            leases_pb2.CreateRequest(
                id=lease_id, labels={GC_EXPIRE_LABEL: expire.strftime("%Y-%m-%dT%H:%M:%SZ")}
            ),
            "create lease",
        )
        return lease_id

    async def pin_image(self, manifest_digest: str) -> str:
        """The lease that pins an imported image's blobs and snapshots (no expiry)."""
        lease_id = f"agentos-image-{manifest_digest.partition(':')[2][:32]}"
        await self._conn.call(
            self._conn.leases.Create,
            leases_pb2.CreateRequest(id=lease_id),
            "create image lease",
            tolerate=ALREADY_EXISTS,
        )
        return lease_id

    async def delete(self, lease_id: str) -> None:
        """Delete a lease, ignoring any error (an expiring lease ends by itself)."""
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._conn.leases.Delete(
                leases_pb2.DeleteRequest(id=lease_id),
                metadata=self._conn.metadata(),
                timeout=self._conn.rpc_timeout_s,
            )

"""Images in containerd: resolving a reference to its config, importing an OCI archive.

An image is either already in containerd and unpacked for the configured snapshotter (`ctr
images import/pull --snapshotter ...`), or a local OCI archive named `oci-archive:/abs/path
.tar`, imported through the API on first use: blobs into the content store (content.Write,
checked against their digests), each layer unpacked (snapshots.Prepare → diff.Apply →
snapshots.Commit under its chain ID) and an image `oci-archive:PATH@<manifest digest>`
(images.Create). Everything imported is pinned by a lease `agentos-image-<digest>` that never
expires, so containerd's garbage collector keeps it. Pulling from a registry is not done here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import platform
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from controlplane.runtimes.base import SandboxError
from controlplane.runtimes.containerd.api import containerd_content_pb2 as content_pb2
from controlplane.runtimes.containerd.api import containerd_diff_pb2 as diff_pb2
from controlplane.runtimes.containerd.api import containerd_images_pb2 as images_pb2
from controlplane.runtimes.containerd.api import containerd_types_pb2 as types_pb2
from controlplane.runtimes.containerd.connection import (
    ALREADY_EXISTS,
    NOT_FOUND,
    Connection,
    containerd_error,
)
from controlplane.runtimes.containerd.oci_archive import (
    INDEX_MEDIA_TYPES,
    MAX_JSON_BYTES,
    ArchivedImage,
    Blob,
    OciArchive,
)
from controlplane.runtimes.containerd.oci_spec import ImageConfig
from controlplane.runtimes.containerd.snapshots import Leases, Snapshots

MANIFEST_MEDIA_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
MAX_BLOB_BYTES = MAX_JSON_BYTES  # manifests and configs are small; refuse anything bigger
LAYER_TIMEOUT_S = 300.0  # writing or applying one layer


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


def host_platform() -> tuple[str, str]:
    """(os, architecture) of this host in OCI platform terms, e.g. ("linux", "amd64")."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )
    return "linux", arch


class ImageStore:
    """containerd's images, content store and unpacked layers, over `conn`."""

    def __init__(self, conn: Connection, snapshots: Snapshots, leases: Leases) -> None:
        self._conn = conn
        self._snapshots = snapshots
        self._leases = leases
        self._imports: dict[Path, asyncio.Lock] = {}

    async def read_blob(self, digest: str) -> bytes:
        """A blob from the content store, checked against its sha256 digest. Raises
        SandboxError (ImageNotFound, InvalidImage: too big or not matching)."""
        chunks: list[bytes] = []
        size = 0
        try:
            call = self._conn.content.Read(
                content_pb2.ReadContentRequest(digest=digest),
                metadata=self._conn.metadata(),
                timeout=self._conn.rpc_timeout_s,
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
            raise containerd_error(err, f"read blob {digest}") from err
        data = b"".join(chunks)
        algo, _, hexdigest = digest.partition(":")
        if algo == "sha256" and hashlib.sha256(data).hexdigest() != hexdigest:
            raise SandboxError("InvalidImage", f"blob {digest} does not match its digest")
        return data

    async def resolve(self, ref: str) -> ImageConfig:
        """images.Get (as given, then normalized) → manifest (from an index: this host's
        platform) → config. Raises SandboxError (ImageNotFound, InvalidImage)."""
        image: images_pb2.Image | None = None
        for name in dict.fromkeys([ref, normalize_image_ref(ref)]):
            resp = await self._get_image(name)
            if resp is not None:
                image = resp.image
                break
        if image is None:
            where = f"containerd namespace {self._conn.namespace}"
            raise SandboxError("ImageNotFound", f"image {ref} is not in {where}")
        target = await self._platform_manifest(ref, image.target)
        manifest = json.loads(await self.read_blob(target.digest))
        config = json.loads(await self.read_blob(manifest["config"]["digest"]))
        cfg = config.get("config") or {}
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        return ImageConfig(
            ref=image.name,
            chain_id=chain_id(diff_ids),
            entrypoint=list(cfg.get("Entrypoint") or []),
            cmd=list(cfg.get("Cmd") or []),
            env=list(cfg.get("Env") or []),
            user=cfg.get("User") or "",
            workdir=cfg.get("WorkingDir") or "",
        )

    async def _get_image(self, name: str) -> Any:
        """images.Get's response, or None if there is no such image."""
        return await self._conn.call(
            self._conn.images.Get,
            images_pb2.GetImageRequest(name=name),
            f"get image {name}",
            tolerate=NOT_FOUND,
        )

    async def _platform_manifest(self, ref: str, target: Any) -> Any:
        """The manifest descriptor for this host's platform, following indexes."""
        for _ in range(4):  # an index may (rarely) point at another index
            if target.media_type not in INDEX_MEDIA_TYPES:
                break
            index = json.loads(await self.read_blob(target.digest))
            want_os, want_arch = host_platform()
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
        return target

    async def import_archive(self, path: Path) -> str:
        """Import the OCI archive at `path` (see the module docstring); returns the image
        name. Idempotent and cheap once done (one images.Get). Raises SandboxError
        (InvalidImage, ContainerdError, RuntimeUnavailable)."""
        async with self._imports.setdefault(path, asyncio.Lock()):
            with OciArchive(path) as archive:
                image = await asyncio.to_thread(archive.image, *host_platform())
                name = f"oci-archive:{path}@{image.manifest.digest}"
                if await self._get_image(name) is not None:
                    return name
                lease = await self._leases.pin_image(image.manifest.digest)
                for blob in (image.config, *image.layers, image.manifest):
                    await self._write_blob(archive, blob, lease)
                await self._unpack(image, lease)
                target = types_pb2.Descriptor(
                    media_type=image.manifest.media_type,
                    digest=image.manifest.digest,
                    size=image.manifest.size,
                )
                await self._conn.call(
                    self._conn.images.Create,
                    images_pb2.CreateImageRequest(image=images_pb2.Image(name=name, target=target)),
                    f"create image {name}",
                    lease=lease,
                    tolerate=ALREADY_EXISTS,
                )
        return name

    async def _write_blob(self, archive: OciArchive, blob: Blob, lease: str) -> None:
        """content.Write of one blob (skipped when the store has it); containerd checks the
        size and digest at commit."""
        known = await self._conn.call(
            self._conn.content.Info,
            content_pb2.InfoRequest(digest=blob.digest),
            f"content info {blob.digest}",
            lease=lease,
            tolerate=NOT_FOUND,
        )
        if known is not None:
            return
        chunks = await asyncio.to_thread(lambda: list(archive.chunks(blob.digest)))
        try:
            call = self._conn.content.Write(
                iter(_write_requests(blob, chunks)),
                metadata=self._conn.metadata(lease),
                timeout=LAYER_TIMEOUT_S,
            )
            last = None
            async for response in call:
                last = response
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.ALREADY_EXISTS:
                return  # written meanwhile by someone else
            raise containerd_error(err, f"write blob {blob.digest}") from err
        if last is None or last.digest != blob.digest:
            raise SandboxError("ContainerdError", f"write of blob {blob.digest} did not commit")

    async def _unpack(self, image: ArchivedImage, lease: str) -> None:
        """Each layer applied onto its parent's snapshot and committed under its chain ID."""
        parent = ""
        for i, layer in enumerate(image.layers):
            chain = chain_id(image.diff_ids[: i + 1])
            if not await self._snapshots.exists(chain):
                await self._unpack_layer(layer, image.diff_ids[i], parent, chain, lease)
            parent = chain

    async def _unpack_layer(
        self, layer: Blob, diff_id: str, parent: str, chain: str, lease: str
    ) -> None:
        """diff.Apply of `layer` onto a fresh snapshot on `parent`, committed as `chain`;
        the snapshot is removed again if anything fails."""
        key = f"agentos-extract-{uuid.uuid4().hex[:12]}-{chain}"
        mounts = await self._snapshots.prepare(key, parent, lease)
        try:
            resp = await self._conn.diff.Apply(
                diff_pb2.ApplyRequest(
                    diff=types_pb2.Descriptor(
                        media_type=layer.media_type, digest=layer.digest, size=layer.size
                    ),
                    mounts=mounts,
                ),
                metadata=self._conn.metadata(lease),
                timeout=LAYER_TIMEOUT_S,
            )
            if resp.applied.digest != diff_id:
                raise SandboxError(
                    "InvalidImage",
                    f"layer {layer.digest} unpacks to {resp.applied.digest}, "
                    f"not its diff_id {diff_id}",
                )
            await self._snapshots.commit(chain, key, lease)
        except grpc.aio.AioRpcError as err:
            await self._snapshots.remove(key)
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise containerd_error(err, f"unpack layer {layer.digest}") from err
        except SandboxError:
            await self._snapshots.remove(key)
            raise


def _write_requests(blob: Blob, chunks: list[bytes]) -> list[content_pb2.WriteContentRequest]:
    """content.Write's stream for one blob: WRITE each chunk at its offset, then COMMIT with
    the expected size and digest."""
    ref = f"agentos-import-{blob.digest}"
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
            action=content_pb2.COMMIT, ref=ref, offset=offset, total=blob.size, expected=blob.digest
        )
    )
    return out

"""Reading an OCI image layout archive: the tar `ctr images export`, `skopeo copy
oci-archive:` and hack/build-agent-image.py write (OCI image-layout spec v1: `oci-layout`,
`index.json`, `blobs/<algorithm>/<hex>`).

An agent names one with the containers-transports syntax `oci-archive:/absolute/path.tar`
(podman, skopeo, buildah). This module only reads and checks the archive; the containerd
runtime writes what it finds into containerd through its API.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from controlplane.runtimes.base import SandboxError

PREFIX = "oci-archive:"
INDEX_MEDIA_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MAX_JSON_BYTES = 4 * 1024 * 1024  # index, manifest and config are small
CHUNK_BYTES = 1024 * 1024


def archive_path(image: str) -> Path | None:
    """The archive of an `oci-archive:PATH` image, or None for any other reference."""
    if not image.startswith(PREFIX):
        return None
    return Path(image[len(PREFIX) :])


@dataclass(frozen=True)
class Blob:
    """A content descriptor (OCI image spec `descriptor`): media type, digest, size in bytes."""

    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class ArchivedImage:
    """The image of one platform in an archive: its manifest, config and layers (in order,
    with the uncompressed digests of the config's `rootfs.diff_ids`)."""

    manifest: Blob
    config: Blob
    layers: list[Blob]
    diff_ids: list[str]


class OciArchive:
    """An OCI layout tar opened for reading. Raises SandboxError("InvalidImage") for an
    archive that is missing, not a tar, not an OCI layout, or whose blobs fail their digest."""

    def __init__(self, path: Path) -> None:
        if not path.is_absolute():
            raise SandboxError("InvalidImage", f"{PREFIX}{path}: the path must be absolute")
        try:
            self._tar = tarfile.open(path)  # noqa: SIM115 - closed by close()
        except (OSError, tarfile.TarError) as exc:
            raise SandboxError("InvalidImage", f"{PREFIX}{path}: {exc}") from None
        self.path = path
        self._members = {
            str(PurePosixPath(m.name)): m for m in self._tar.getmembers() if m.isfile()
        }
        if "oci-layout" not in self._members or "index.json" not in self._members:
            self.close()
            raise SandboxError(
                "InvalidImage",
                f"{PREFIX}{path}: not an OCI image layout (no oci-layout/index.json)",
            )

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> OciArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _member(self, digest: str) -> tarfile.TarInfo:
        algorithm, _, hexdigest = digest.partition(":")
        member = self._members.get(f"blobs/{algorithm}/{hexdigest}")
        if member is None:
            raise SandboxError("InvalidImage", f"{PREFIX}{self.path}: blob {digest} is missing")
        return member

    def read_json(self, digest: str | None = None) -> Any:
        """`index.json` (no digest) or a small JSON blob, checked against its digest."""
        member = self._members["index.json"] if digest is None else self._member(digest)
        if member.size > MAX_JSON_BYTES:
            raise SandboxError("InvalidImage", f"{PREFIX}{self.path}: {member.name} is too big")
        data = b"".join(self.chunks(digest)) if digest else self._read_all(member)
        return json.loads(data)

    def _read_all(self, member: tarfile.TarInfo) -> bytes:
        handle = self._tar.extractfile(member)
        assert handle is not None
        return handle.read()

    def chunks(self, digest: str) -> Iterator[bytes]:
        """The blob's bytes in chunks; the digest is checked after the last one."""
        member = self._member(digest)
        handle = self._tar.extractfile(member)
        assert handle is not None
        algorithm, _, expected = digest.partition(":")
        if algorithm != "sha256":
            raise SandboxError("InvalidImage", f"{PREFIX}{self.path}: unsupported {algorithm}")
        hasher = hashlib.sha256()
        while chunk := handle.read(CHUNK_BYTES):
            hasher.update(chunk)
            yield chunk
        if hasher.hexdigest() != expected:
            raise SandboxError(
                "InvalidImage", f"{PREFIX}{self.path}: blob {digest} does not match its digest"
            )

    def image(self, os_name: str, architecture: str) -> ArchivedImage:
        """The image for `os_name`/`architecture` (a manifest without a platform matches any).
        Nested indexes are followed."""
        target = self._pick(self.read_json(), os_name, architecture)
        for _ in range(4):
            if target.media_type not in INDEX_MEDIA_TYPES:
                break
            target = self._pick(self.read_json(target.digest), os_name, architecture)
        manifest = self.read_json(target.digest)
        try:
            config = _blob(manifest["config"])
            layers = [_blob(d) for d in manifest.get("layers") or []]
        except (KeyError, TypeError) as exc:
            raise SandboxError(
                "InvalidImage", f"{PREFIX}{self.path}: bad manifest ({exc})"
            ) from None
        diff_ids = list((self.read_json(config.digest).get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(layers):
            raise SandboxError(
                "InvalidImage",
                f"{PREFIX}{self.path}: {len(layers)} layers but {len(diff_ids)} diff_ids",
            )
        return ArchivedImage(target, config, layers, diff_ids)

    def _pick(self, index: Any, os_name: str, architecture: str) -> Blob:
        for desc in index.get("manifests") or []:
            platform = desc.get("platform") or {}
            if platform.get("os", os_name) == os_name and (
                platform.get("architecture", architecture) == architecture
            ):
                return _blob(desc)
        raise SandboxError(
            "InvalidImage", f"{PREFIX}{self.path}: no image for {os_name}/{architecture}"
        )


def _blob(desc: dict[str, Any]) -> Blob:
    return Blob(desc.get("mediaType", ""), desc["digest"], int(desc["size"]))

"""The model providers' side of the proxy: one shared httpx.AsyncClient (a connection pool
per upstream origin) and the provider's credential, read where its `credentialRef` says
(architecture/model-gateway.md, "Where the secret lives").

The credential goes into the upstream request's `Authorization` header and nowhere else:
not into a log line, an error message, a step or an answer. Errors name the reference
(`env OPENAI_API_KEY`), never the value. The sandbox's own credential is never forwarded:
the upstream request is built from scratch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from controlplane.domain.errors import UpstreamUnavailable
from controlplane.domain.providers.model import CredentialRef, ProviderSpec

FILE_TTL_S = 5.0  # a rotated secret file is read again within this time


class Upstream:
    """Sends proxied requests to providers. `timeout_s`: read timeout per request (a model
    can think for a while); `max_connections`: the pool's bound across all providers;
    `max_idle`: keep-alive connections kept. Few on purpose: httpcore looks at every pooled
    connection for each request (seen in a py-spy profile of bench/gateway.py, a third of
    the proxy's time with 512 idle connections)."""

    def __init__(
        self,
        *,
        timeout_s: float = 300.0,
        max_connections: int = 256,
        max_idle: int = 24,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        # trust_env=False: no HTTP(S)_PROXY or .netrc of the serving process's environment
        # sees the provider's credential.
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_idle,
                keepalive_expiry=30.0,
            ),
            trust_env=False,
        )
        self._files: dict[str, tuple[str, float]] = {}

    def credential(self, ref: CredentialRef, provider: str) -> str:
        """The secret `ref` names. Raises UpstreamUnavailable (naming the reference) when
        the variable is unset or the file unreadable or empty."""
        if ref.env is not None:
            value = os.environ.get(ref.env, "").strip()
            where = f"environment variable {ref.env}"
        else:
            assert ref.file is not None
            value, where = self._read(ref.file), f"file {ref.file}"
        if not value:
            raise UpstreamUnavailable(
                f"the credential of model provider {provider!r} is not set ({where})"
            )
        return value

    def _read(self, path: str) -> str:
        now = time.monotonic()
        cached = self._files.get(path)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            value = Path(path).read_text().strip()
        except OSError:
            value = ""
        self._files[path] = (value, now + FILE_TTL_S)
        return value

    def build(self, spec: ProviderSpec, provider: str, path: str, body: bytes) -> httpx.Request:
        """A POST of `body` (JSON) to `spec.baseUrl` + `path` with the provider's credential."""
        secret = self.credential(spec.credentialRef, provider)
        headers = {
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        return self.client.build_request("POST", spec.baseUrl + path, content=body, headers=headers)

    async def send(self, request: httpx.Request, provider: str, *, stream: bool) -> httpx.Response:
        """Send `request`; with `stream` the body is left to read. Raises UpstreamUnavailable
        on a transport failure or a timeout (the message names the failure's type only:
        httpx's messages may quote the request)."""
        try:
            return await self.client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(
                f"model provider {provider!r} failed: {type(exc).__name__}"
            ) from None

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self.client.aclose()

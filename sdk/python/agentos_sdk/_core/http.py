"""A minimal HTTP/1.1 client over asyncio streams, with keep-alive connections.

Why not http.client in threads: a long poll (`runs:next`) or a step report must be
cancellable at once when the run is cancelled or the agent stops; a task blocked in a
thread is not. Enough of RFC 9112 for one JSON API: Content-Length and chunked bodies,
`Connection: close`, one retry on a reused connection the server had closed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

_Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True)
class Response:
    """One HTTP response: `status`, lower-cased `headers`, the whole `body`."""

    status: int
    headers: dict[str, str]
    body: bytes


class ConnectionPool:
    """Keep-alive connections to one origin (`http://host:port/prefix` or https).

    `request` raises OSError (connection refused, reset, ...), asyncio.IncompleteReadError
    or TimeoutError on transport failures; HTTP error statuses are returned, not raised.
    """

    def __init__(self, base_url: str, *, max_idle: int = 8) -> None:
        parts = urlsplit(base_url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        self._authority = parts.netloc
        self._idle: deque[_Stream] = deque()
        self._max_idle = max_idle

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> Response:
        """Send one request and read its response within `timeout_s` seconds."""
        async with asyncio.timeout(timeout_s):
            reused = bool(self._idle)
            stream = self._idle.pop() if reused else await self._open()
            try:
                try:
                    response, keep = await self._exchange(stream, method, path, body, headers)
                except _StaleConnection:
                    if not reused:
                        raise
                    # The server had closed the idle connection before reading the request.
                    _close(stream)
                    stream = await self._open()
                    response, keep = await self._exchange(stream, method, path, body, headers)
            except BaseException:
                _close(stream)
                raise
            if keep and len(self._idle) < self._max_idle:
                self._idle.append(stream)
            else:
                _close(stream)
            return response

    async def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            _close(self._idle.pop())

    async def _open(self) -> _Stream:
        context = ssl.create_default_context() if self._tls else None
        return await asyncio.open_connection(self._host, self._port, ssl=context)

    async def _exchange(
        self, stream: _Stream, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[Response, bool]:
        reader, writer = stream
        lines = [f"{method} {self._prefix}{path} HTTP/1.1", f"Host: {self._authority}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            status_line = await reader.readline()
        except ConnectionResetError as exc:
            raise _StaleConnection(str(exc)) from exc
        if not status_line:
            raise _StaleConnection("the server closed the connection")
        _version, status_text, *_ = status_line.decode("latin-1").split(" ", 2)
        status = int(status_text)
        response_headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip()
        keep = response_headers.get("connection", "").lower() != "close"
        if status in (204, 304) or 100 <= status < 200 or method == "HEAD":
            data = b""
        elif "chunked" in response_headers.get("transfer-encoding", "").lower():
            data = await _read_chunked(reader)
        elif "content-length" in response_headers:
            data = await reader.readexactly(int(response_headers["content-length"]))
        else:
            data, keep = await reader.read(), False
        return Response(status, response_headers, data), keep


class _StaleConnection(ConnectionError):
    """The connection ended before any byte of the response arrived."""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _close(stream: _Stream) -> None:
    stream[1].close()

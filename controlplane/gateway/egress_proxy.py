"""The egress proxy: a sandbox's only way out (architecture/networking.md, "Egress";
adr/0016-egress-proxy.md).

An HTTP/1.1 forward proxy on asyncio streams. It serves `CONNECT host:port` (a TCP tunnel,
RFC 9110 §9.3.6) and plain-HTTP requests in absolute form (`GET http://host/path`, forwarded
in origin form with `Connection: close`, without `Proxy-Authorization` and the other
hop-by-hop headers, RFC 9110 §7.6.1). One request per client connection.

Each request names its sandbox by `Proxy-Authorization: Basic base64(user:credential)`: the
password is the sandbox credential (AGENTOS_AGENT_TOKEN), the user name is ignored. The
agent's `spec.network.egress`, read when the credential is checked, decides. The proxy
resolves names itself and refuses any name that resolves to an address that is not global
(loopback, private, link-local, the sandbox subnet...), so DNS cannot point a tunnel back into
the host; names in the static override (AGENTOS_EGRESS_RESOLVE) are trusted as given.

Answers: 407 (no or bad credential, with `Proxy-Authenticate`), 403 (host:port not allowed,
or a non-global address), 502 (resolution or upstream connection failed), 400 (malformed),
503 (at the connection limit). Each refusal is counted (`agentos_egress_refusals_total`) and
logged once with tenant, agent, host, port and reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import structlog

from controlplane.domain.agents.egress import allows, is_global
from controlplane.domain.errors import Unauthenticated
from controlplane.observability.egress_metrics import record_connection, record_refusal
from controlplane.service.run_execution import AgentIdentity

log = structlog.get_logger(__name__)

Authenticate = Callable[[str | None], Awaitable[AgentIdentity]]
REALM = "agentos-egress"
# RFC 9110 §7.6.1 and the de-facto Proxy-Connection; Host is rebuilt from the request target.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "host",
    }
)
_PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    407: "Proxy Authentication Required",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class ProxyLimits:
    """Bounds of the proxy. Times in seconds; `max_header_bytes` bounds a request's head."""

    connect_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    header_timeout_s: float = 10.0
    max_connections: int = 1024
    max_header_bytes: int = 32 * 1024


def parse_resolve(text: str) -> dict[str, str]:
    """`name=ip,name2=ip2` (as curl's --resolve, without ports) as a mapping from lower-case
    name to address. Empty text: no overrides. Raises ValueError: an entry without `=` or an
    address that is not an IP address."""
    overrides: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, address = entry.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"AGENTOS_EGRESS_RESOLVE: {entry!r} is not name=ip")
        try:
            ipaddress.ip_address(address.strip())
        except ValueError:
            raise ValueError(f"AGENTOS_EGRESS_RESOLVE: {address!r} is not an IP address") from None
        overrides[name.strip().lower().rstrip(".")] = address.strip()
    return overrides


class Refused(Exception):
    """A request the proxy answers itself with `status`; `reason` is the metric's label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Request:
    """A parsed request head: `headers` in order with their original names."""

    method: str
    target: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        return next((v for k, v in self.headers if k.lower() == name), None)


@dataclass(frozen=True)
class Destination:
    """Where a request goes: `host`, `port`, and for plain HTTP the head to send upstream."""

    host: str
    port: int
    kind: Literal["connect", "http"]
    upstream_head: bytes = b""


def parse_head(head: bytes) -> Request:
    """A request head (through its blank line) as a Request. Raises Refused (400)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise Refused(400, "bad_request", "not an HTTP/1.x request line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise Refused(400, "bad_request", "a malformed header line")
        headers.append((name, value.strip()))
    return Request(parts[0].upper(), parts[1], headers)


def credential_of(request: Request) -> str | None:
    """The password of `Proxy-Authorization: Basic ...` (the sandbox credential), or None."""
    scheme, _, encoded = (request.header("proxy-authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


def destination(request: Request) -> Destination:
    """Where `request` goes. CONNECT takes `host:port`; any other method an absolute
    `http://` URI. Raises Refused (400) for anything else."""
    if request.method == "CONNECT":
        host, port = _authority(request.target, default_port=None)
        return Destination(host, port, "connect")
    url = urlsplit(request.target)
    if url.scheme.lower() != "http" or not url.netloc:
        raise Refused(400, "bad_request", "a proxy request needs an absolute http:// URI")
    if "@" in url.netloc:
        raise Refused(400, "bad_request", "user information in the URI is not allowed")
    host, port = _authority(url.netloc, default_port=80)
    origin = (url.path or "/") + (f"?{url.query}" if url.query else "")
    listed = {t.strip().lower() for v in _values(request, "connection") for t in v.split(",")}
    kept = [
        (k, v)
        for k, v in request.headers
        if k.lower() not in HOP_BY_HOP and k.lower() not in listed
    ]
    lines = [f"{request.method} {origin} HTTP/1.1", f"Host: {url.netloc}"]
    lines += [f"{k}: {v}" for k, v in kept] + ["Connection: close", "", ""]
    return Destination(host, port, "http", "\r\n".join(lines).encode("latin-1"))


def _values(request: Request, name: str) -> list[str]:
    return [v for k, v in request.headers if k.lower() == name]


def _authority(authority: str, default_port: int | None) -> tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.rpartition(":") if ":" in authority else (authority, "", "")
    if not port_text and default_port is not None:
        return host.lower(), default_port
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise Refused(400, "bad_request", f"{authority!r} is not host:port")
    return host.lower(), int(port_text)


class EgressProxy:
    """The proxy on pre-bound listening sockets: `start(sockets)`, then `close()`.

    `authenticate(credential)` returns the caller's AgentIdentity or raises Unauthenticated
    (the gateway's CredentialCache). `resolve` maps names to trusted addresses.
    """

    def __init__(
        self,
        authenticate: Authenticate,
        *,
        resolve: Mapping[str, str] | None = None,
        limits: ProxyLimits | None = None,
    ) -> None:
        self._authenticate = authenticate
        self._overrides = dict(resolve or {})
        self.limits = limits or ProxyLimits()
        self._servers: list[asyncio.Server] = []
        self._active = 0

    async def start(self, sockets: Sequence[socket.socket]) -> None:
        """Serve on each of `sockets` (bound, listening or not)."""
        for sock in sockets:
            self._servers.append(
                await asyncio.start_server(
                    self._handle, sock=sock, limit=self.limits.max_header_bytes
                )
            )

    async def close(self) -> None:
        """Stop accepting; open tunnels end with their connections."""
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._servers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        context: dict[str, object] = {"tenant": None, "agent": None, "host": None, "port": None}
        try:
            if self._active >= self.limits.max_connections:
                raise Refused(503, "busy", "the egress proxy is at its connection limit")
            self._active += 1
            try:
                await self._serve(reader, writer, context)
            finally:
                self._active -= 1
        except Refused as refused:
            self._refuse(writer, refused, context)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except Exception:  # one connection's failure must not reach the server
            log.exception("egress proxy error", **context)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: dict[str, object],
    ) -> None:
        try:
            async with asyncio.timeout(self.limits.header_timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise Refused(400, "bad_request", "the request head is too long") from None
        request = parse_head(head)
        try:
            who = await self._authenticate(credential_of(request))
        except Unauthenticated:
            raise Refused(407, "unauthenticated", "a sandbox credential is required") from None
        context.update(tenant=who.tenant, agent=who.agent)
        target = destination(request)
        context.update(host=target.host, port=target.port)
        if not allows(who.egress, target.host, target.port):
            raise Refused(403, "not_allowed", f"{target.host}:{target.port} is not allowed")
        addresses = await self._resolve(target.host, target.port)
        up_reader, up_writer = await self._connect(addresses, target.port)
        record_connection(target.kind)
        log.info("egress connection", **context, method=target.kind)
        try:
            if target.kind == "connect":
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            else:
                up_writer.write(target.upstream_head)
            await splice(reader, writer, up_reader, up_writer, self.limits.idle_timeout_s)
        finally:
            up_writer.close()

    async def _resolve(self, host: str, port: int) -> list[str]:
        override = self._overrides.get(host.rstrip("."))
        if override is not None:
            return [override]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.limits.connect_timeout_s):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError, UnicodeError):
            raise Refused(502, "resolve_failed", f"{host} could not be resolved") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise Refused(502, "resolve_failed", f"{host} has no address")
        if not all(is_global(a) for a in addresses):
            raise Refused(403, "private_address", f"{host} resolves to a non-global address")
        return addresses

    async def _connect(
        self, addresses: list[str], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.limits.connect_timeout_s):
                for address in addresses:
                    with contextlib.suppress(OSError):
                        return await asyncio.open_connection(address, port)
        except TimeoutError:
            pass
        raise Refused(502, "connect_failed", f"could not connect to port {port}")

    def _refuse(
        self, writer: asyncio.StreamWriter, refused: Refused, context: dict[str, object]
    ) -> None:
        record_refusal(refused.reason)
        log.warning("egress refused", **context, reason=refused.reason, status=refused.status)
        body = (refused.message + "\n").encode()
        lines = [f"HTTP/1.1 {refused.status} {_PHRASES.get(refused.status, 'Error')}"]
        if refused.status == 407:
            lines.append(f'Proxy-Authenticate: Basic realm="{REALM}"')
        lines += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"]
        lines += ["Connection: close", "", ""]
        with contextlib.suppress(OSError):
            writer.write("\r\n".join(lines).encode() + body)


async def splice(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    idle_timeout_s: float,
) -> None:
    """Copy bytes both ways until the upstream closes, either side fails, or nothing moves
    for `idle_timeout_s` seconds. The client's end of input is passed on (half-close) and
    the upstream's answer still flows back."""
    loop = asyncio.get_running_loop()
    last = [loop.time()]

    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> str:
        while True:
            try:
                data = await asyncio.wait_for(src.read(65536), idle_timeout_s)
            except TimeoutError:
                if loop.time() - last[0] >= idle_timeout_s:
                    return "idle"
                continue
            if not data:
                if dst.can_write_eof():
                    dst.write_eof()
                return "eof"
            last[0] = loop.time()
            dst.write(data)
            # A peer that stops reading holds no connection open for longer than the idle time.
            await asyncio.wait_for(dst.drain(), idle_timeout_s)

    upward = asyncio.create_task(copy(client_reader, up_writer))
    downward = asyncio.create_task(copy(up_reader, client_writer))
    try:
        done, _ = await asyncio.wait({upward, downward}, return_when=asyncio.FIRST_COMPLETED)
        if upward in done and downward not in done and _ended_cleanly(upward):
            await asyncio.wait({downward})
    finally:
        for task in (upward, downward):
            task.cancel()
        await asyncio.gather(upward, downward, return_exceptions=True)


def _ended_cleanly(task: asyncio.Task[str]) -> bool:
    return not task.cancelled() and task.exception() is None and task.result() == "eof"

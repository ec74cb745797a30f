"""The egress proxy against real local servers (a plain HTTP upstream, a TCP echo server as a
CONNECT target), with sandbox credentials issued and checked on the real PostgreSQL.

Names are mapped to 127.0.0.1 by the static override (AGENTOS_EGRESS_RESOLVE), as a test or
an air-gapped site does; `localhost` is not in it, so it resolves for real (to a loopback
address) and must be refused.
"""

from __future__ import annotations

import asyncio
import base64
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY

from controlplane.bootstrap import Container
from controlplane.config import Settings
from controlplane.entrypoints.serve import bind_sockets
from controlplane.gateway.auth import CredentialCache
from controlplane.gateway.egress_proxy import EgressProxy, ProxyLimits
from controlplane.service import agents as agent_svc
from controlplane.service import run_execution

pytestmark = pytest.mark.postgres
TENANT = "egress"


@dataclass
class Upstreams:
    http_port: int
    echo_port: int
    seen: list[bytes]


@dataclass
class Plane:
    proxy_port: int
    token: str
    empty_token: str
    up: Upstreams


async def _http_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    SEEN.append(head)
    body = b"hello from upstream"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data.upper())
        await writer.drain()
    writer.close()


SEEN: list[bytes] = []


async def _agent_with_credential(container: Container, name: str, egress: Any) -> str:
    manifest = {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"image": "local/none", "network": {"egress": egress}},
    }
    async with container.uow("system:test") as uow:
        await agent_svc.create_agent(uow, TENANT, manifest)
    async with container.uow("system:test") as uow:
        record = await uow.agents.get(TENANT, name)
        record = await agent_svc.update_status(uow, record, sandboxID=f"sb-{name}")
        await uow.commit()
    async with container.uow("system:test") as uow:
        (secret,) = await run_execution.issue_credentials(uow, [(record, f"sb-{name}")])
    return secret


@pytest.fixture
async def plane(pg_url: str) -> AsyncIterator[Plane]:
    SEEN.clear()
    http = await asyncio.start_server(_http_upstream, "127.0.0.1", 0)
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    up = Upstreams(http.sockets[0].getsockname()[1], echo.sockets[0].getsockname()[1], SEEN)
    container = Container(Settings(database_url=pg_url))
    token = await _agent_with_credential(
        container,
        "caller",
        [
            {"host": "api.test", "ports": [up.echo_port]},
            {"host": "*.plain.test", "ports": [up.http_port]},
            {"host": "localhost", "ports": [up.http_port]},
        ],
    )
    empty_token = await _agent_with_credential(container, "shut", [])
    overrides = {"api.test": "127.0.0.1", "www.plain.test": "127.0.0.1", "other.test": "127.0.0.1"}
    proxy = EgressProxy(CredentialCache(container.uow, 0).authenticate, resolve=overrides)
    sockets = bind_sockets(["127.0.0.1"], 0)
    port = sockets[0].getsockname()[1]
    await proxy.start(sockets)
    try:
        yield Plane(port, token, empty_token, up)
    finally:
        await proxy.close()
        for server in (http, echo):
            server.close()
        await container.close()


def _auth(token: str) -> str:
    return "Proxy-Authorization: Basic " + base64.b64encode(f"agent:{token}".encode()).decode()


async def _ask(
    plane: Plane, line: str, token: str | None
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", plane.proxy_port)
    headers = [line, "Host: ignored"] + ([_auth(token)] if token else [])
    writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head, reader, writer


def refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("agentos_egress_refusals_total", {"reason": reason}) or 0.0


async def test_an_allowed_host_is_tunnelled_both_ways(plane: Plane) -> None:
    before = REGISTRY.get_sample_value("agentos_egress_connections_total", {"method": "connect"})
    head, reader, writer = await _ask(
        plane, f"CONNECT api.test:{plane.up.echo_port} HTTP/1.1", plane.token
    )
    assert head.startswith(b"HTTP/1.1 200")
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"PING"
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    after = REGISTRY.get_sample_value("agentos_egress_connections_total", {"method": "connect"})
    assert (after or 0) == (before or 0) + 1
    writer.close()


async def test_a_plain_request_reaches_the_upstream_without_the_credential(plane: Plane) -> None:
    url = f"http://www.plain.test:{plane.up.http_port}/x?y=1"
    head, reader, writer = await _ask(plane, f"GET {url} HTTP/1.1", plane.token)
    assert head.startswith(b"HTTP/1.1 200")
    assert await asyncio.wait_for(reader.read(), 5) == b"hello from upstream"
    writer.close()
    (seen,) = plane.up.seen
    assert seen.startswith(b"GET /x?y=1 HTTP/1.1\r\n")
    assert f"Host: www.plain.test:{plane.up.http_port}".encode() in seen
    assert b"proxy-authorization" not in seen.lower()
    assert plane.token.encode() not in seen


async def test_a_stock_client_uses_the_proxy_url_with_the_credential(plane: Plane) -> None:
    proxy = f"http://agent:{plane.token}@127.0.0.1:{plane.proxy_port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    url = f"http://www.plain.test:{plane.up.http_port}/stock"

    def fetch() -> bytes:
        with opener.open(url, timeout=5) as answer:
            body: bytes = answer.read()
            return body

    assert await asyncio.to_thread(fetch) == b"hello from upstream"


async def test_a_host_not_on_the_list_is_refused_counted_and_logged(plane: Plane) -> None:
    before = refusals("not_allowed")
    with structlog.testing.capture_logs() as logs:
        head, _, writer = await _ask(plane, "CONNECT other.test:443 HTTP/1.1", plane.token)
    writer.close()
    assert head.startswith(b"HTTP/1.1 403")
    assert refusals("not_allowed") == before + 1
    (line,) = [entry for entry in logs if entry["event"] == "egress refused"]
    named = {key: line[key] for key in ("tenant", "agent", "host", "port", "reason")}
    assert named == {
        "tenant": TENANT,
        "agent": "caller",
        "host": "other.test",
        "port": 443,
        "reason": "not_allowed",
    }


async def test_an_allowed_host_on_another_port_is_refused(plane: Plane) -> None:
    head, _, writer = await _ask(plane, "CONNECT api.test:443 HTTP/1.1", plane.token)
    writer.close()
    assert head.startswith(b"HTTP/1.1 403")


@pytest.mark.parametrize("token", [None, "aosa_not-a-credential"])
async def test_without_a_valid_credential_the_answer_is_407(
    plane: Plane, token: str | None
) -> None:
    before = refusals("unauthenticated")
    head, _, writer = await _ask(plane, f"CONNECT api.test:{plane.up.echo_port} HTTP/1.1", token)
    writer.close()
    assert head.startswith(b"HTTP/1.1 407")
    assert b'Proxy-Authenticate: Basic realm="agentos-egress"' in head
    assert refusals("unauthenticated") == before + 1


async def test_an_allowed_name_resolving_to_loopback_is_refused(plane: Plane) -> None:
    before = refusals("private_address")
    url = f"http://localhost:{plane.up.http_port}/"
    head, _, writer = await _ask(plane, f"GET {url} HTTP/1.1", plane.token)
    writer.close()
    assert head.startswith(b"HTTP/1.1 403")
    assert refusals("private_address") == before + 1
    assert plane.up.seen == []


async def test_with_no_egress_nothing_leaves(plane: Plane) -> None:
    for line in (
        f"CONNECT api.test:{plane.up.echo_port} HTTP/1.1",
        f"GET http://www.plain.test:{plane.up.http_port}/ HTTP/1.1",
    ):
        head, _, writer = await _ask(plane, line, plane.empty_token)
        writer.close()
        assert head.startswith(b"HTTP/1.1 403")
    assert plane.up.seen == []


async def test_a_silent_tunnel_ends_after_the_idle_time_and_the_limit_answers_503(
    plane: Plane, pg_url: str
) -> None:
    container = Container(Settings(database_url=pg_url))
    limits = ProxyLimits(idle_timeout_s=0.3, max_connections=1)
    proxy = EgressProxy(
        CredentialCache(container.uow, 0).authenticate, resolve={"api.test": "127.0.0.1"},
        limits=limits,
    )  # fmt: skip
    sockets = bind_sockets(["127.0.0.1"], 0)
    await proxy.start(sockets)
    small = Plane(sockets[0].getsockname()[1], plane.token, plane.empty_token, plane.up)
    try:
        line = f"CONNECT api.test:{plane.up.echo_port} HTTP/1.1"
        head, reader, writer = await _ask(small, line, plane.token)
        assert head.startswith(b"HTTP/1.1 200")
        before = refusals("busy")
        second, _, other = await _ask(small, line, plane.token)
        other.close()
        assert second.startswith(b"HTTP/1.1 503")
        assert refusals("busy") == before + 1
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await proxy.close()
        await container.close()

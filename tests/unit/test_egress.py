"""The egress allowlist (domain), its place in the Agent spec, the proxy's pure parts and
the proxy variables each sandbox gets."""

from __future__ import annotations

import base64
from typing import Any, cast

import pytest

from controlplane.bootstrap import Container
from controlplane.config import Settings, gateway_hosts
from controlplane.controllers.agents.config import ControllerConfig
from controlplane.controllers.agents.reconciler import AgentReconciler
from controlplane.controllers.agents.sandbox import proxy_env, sandbox_hash
from controlplane.controllers.agents.store import AgentStore
from controlplane.controllers.machinery.sources import VersionPoller
from controlplane.domain.agents.egress import allows, host_matches, normalize_host
from controlplane.domain.agents.model import AgentStatus, EgressRule, parse_agent
from controlplane.domain.errors import ValidationFailed
from controlplane.domain.events.envelope import utcnow
from controlplane.domain.records import AgentRecord
from controlplane.entrypoints.serve import bind_sockets
from controlplane.gateway.egress_proxy import (
    Refused,
    credential_of,
    destination,
    is_global,
    parse_head,
    parse_resolve,
)


def manifest(egress: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"image": "local/none"}
    if egress is not None:
        spec["network"] = {"egress": egress}
    return {"apiVersion": "agentos.io/v1alpha1", "kind": "Agent", "metadata": {"name": "a"},
            "spec": spec}  # fmt: skip


def rule(host: str, *ports: int) -> EgressRule:
    return EgressRule(host=host, ports=list(ports))


# -- the allowlist ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "allowed"),
    [
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "API.Example.com.", True),
        ("api.example.com", "x.api.example.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "badexample.com", False),
        ("*.example.com", ".example.com", False),
    ],
)
def test_a_wildcard_matches_subdomains_only(pattern: str, host: str, allowed: bool) -> None:
    assert host_matches(pattern, host) is allowed


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("10.0.0.1", "IP address"),
        ("[::1]", "IP address"),
        ("a.*.example.com", "whole first label"),
        ("*example.com", "whole first label"),
        ("*.com", "two labels"),
        ("bad_name.example.com", "DNS label"),
        ("-x.example.com", "DNS label"),
        ("bücher.example", "ASCII"),
        ("example.123", "all digits"),
        ("a" * 64 + ".com", "DNS label"),
        ("", "required"),
    ],
)
def test_a_host_that_is_not_a_dns_name_is_refused(host: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        normalize_host(host)


def test_a_host_is_lower_cased() -> None:
    assert normalize_host("*.Example.COM.") == "*.example.com"


def test_a_host_and_port_are_allowed_only_when_a_rule_names_both() -> None:
    rules = [rule("api.example.com", 443), rule("*.cdn.example", 80, 443)]
    assert allows(rules, "api.example.com", 443)
    assert not allows(rules, "api.example.com", 80)
    assert allows(rules, "img.cdn.example", 80)
    assert not allows(rules, "other.example.com", 443)
    assert not allows([], "api.example.com", 443)
    assert not allows([rule("api.example.com", 443)], "93.184.216.34", 443)


# -- the Agent spec ---------------------------------------------------------------------------


def test_the_default_egress_is_empty() -> None:
    assert parse_agent(manifest()).spec.network.egress == []


def test_egress_rules_are_normalised() -> None:
    agent = parse_agent(manifest([{"host": "API.example.com", "ports": [443, 80, 443]}]))
    assert agent.spec.network.egress == [rule("api.example.com", 80, 443)]


@pytest.mark.parametrize(
    ("egress", "pointer"),
    [
        ([{"host": "10.0.0.1", "ports": [443]}], "/spec/network/egress/0/host"),
        ([{"host": "a.example.com", "ports": []}], "/spec/network/egress/0/ports"),
        ([{"host": "a.example.com", "ports": [0]}], "/spec/network/egress/0/ports"),
        ([{"host": "a.example.com", "ports": [65536]}], "/spec/network/egress/0/ports"),
        ([{"host": "a.example.com", "ports": [True]}], "/spec/network/egress/0/ports/0"),
        ([{"host": "a.example.com"}], "/spec/network/egress/0/ports"),
        ([{"host": "a.example.com", "ports": [1], "x": 1}], "/spec/network/egress/0/x"),
        ([{"host": "a.example.com", "ports": [1]}] * 65, "/spec/network/egress"),
    ],
)
def test_a_bad_rule_is_named_by_its_field(egress: Any, pointer: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_agent(manifest(egress))
    assert pointer in [e.pointer for e in caught.value.errors]


def test_changing_the_egress_keeps_the_sandbox() -> None:
    before = parse_agent(manifest()).spec
    after = parse_agent(manifest([{"host": "a.example.com", "ports": [443]}])).spec
    assert sandbox_hash(before) == sandbox_hash(after)


# -- the proxy's pure parts -------------------------------------------------------------------


def test_the_resolve_override_reads_name_equals_address() -> None:
    assert parse_resolve("") == {}
    assert parse_resolve("A.test=127.0.0.1, b.test=::1") == {"a.test": "127.0.0.1", "b.test": "::1"}
    with pytest.raises(ValueError, match="not an IP"):
        parse_resolve("a.test=somewhere")
    with pytest.raises(ValueError, match="name=ip"):
        parse_resolve("a.test")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.89.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
    ],
)
def test_only_global_addresses_count_as_outside(address: str, expected: bool) -> None:
    assert is_global(address) is expected


def test_a_connect_request_names_host_and_port() -> None:
    request = parse_head(b"CONNECT Api.Example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    target = destination(request)
    assert (target.host, target.port, target.kind) == ("api.example.com", 443, "connect")


def test_a_plain_request_is_forwarded_in_origin_form_without_hop_by_hop_headers() -> None:
    head = (
        b"GET http://a.example.com:8080/p?q=1 HTTP/1.1\r\nHost: elsewhere\r\n"
        b"Proxy-Authorization: Basic eDp5\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"
        b"Proxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n"
    )
    target = destination(parse_head(head))
    assert (target.host, target.port) == ("a.example.com", 8080)
    assert target.upstream_head == (
        b"GET /p?q=1 HTTP/1.1\r\nHost: a.example.com:8080\r\nAccept: */*\r\n"
        b"Connection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    "head",
    [
        b"GET /relative HTTP/1.1\r\n\r\n",
        b"GET https://a.example.com/ HTTP/1.1\r\n\r\n",
        b"GET http://u:p@a.example.com/ HTTP/1.1\r\n\r\n",
        b"CONNECT a.example.com HTTP/1.1\r\n\r\n",
        b"CONNECT a.example.com:99999 HTTP/1.1\r\n\r\n",
        b"NONSENSE\r\n\r\n",
        b"GET http://a.example.com/ HTTP/1.1\r\n folded\r\n\r\n",
    ],
)
def test_a_malformed_request_is_a_bad_request(head: bytes) -> None:
    with pytest.raises(Refused) as caught:
        destination(parse_head(head))
    assert (caught.value.status, caught.value.reason) == (400, "bad_request")


def test_the_credential_is_the_basic_password() -> None:
    def head(value: str) -> bytes:
        return f"CONNECT a.b:1 HTTP/1.1\r\nProxy-Authorization: {value}\r\n\r\n".encode()

    encoded = base64.b64encode(b"agent:aosa_secret").decode()
    assert credential_of(parse_head(head(f"Basic {encoded}"))) == "aosa_secret"
    assert credential_of(parse_head(head("Bearer aosa_secret"))) is None
    assert credential_of(parse_head(head("Basic !!"))) is None
    assert credential_of(parse_head(b"CONNECT a.b:1 HTTP/1.1\r\n\r\n")) is None


# -- the sandbox's environment ----------------------------------------------------------------


def test_the_proxy_variables_carry_the_credential_and_spare_the_gateway() -> None:
    env = proxy_env("http://10.89.0.1:8092", "aosa_t", "http://10.89.0.1:8091")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert env[name] == "http://agent:aosa_t@10.89.0.1:8092"
    assert env["NO_PROXY"] == env["no_proxy"] == "10.89.0.1"


def test_the_proxy_url_defaults_to_the_gateway_host_on_the_proxy_port() -> None:
    db = "sqlite+aiosqlite:///:memory:"
    assert Container(Settings(database_url=db)).egress_proxy_url() == "http://127.0.0.1:8092"
    container = Container(Settings(database_url=db, gateway_url="http://10.89.0.1:8091"))
    assert container.controller_config().egress_proxy_url == "http://10.89.0.1:8092"
    explicit = Settings(database_url=db, egress_proxy_url="http://proxy:3128")
    assert Container(explicit).egress_proxy_url() == "http://proxy:3128"
    assert Container(Settings(database_url=db, egress_proxy_port=0)).egress_proxy_url() is None


def test_the_gateway_listens_on_each_listed_address() -> None:
    settings = Settings(gateway_host="127.0.0.1,10.89.0.1")
    assert gateway_hosts(settings) == ["127.0.0.1", "10.89.0.1"]


class _Store:
    async def issue_credential(self, record: AgentRecord, sandbox_id: str) -> str:
        return "aosa_issued"


async def test_each_sandbox_gets_the_proxy_with_its_own_credential() -> None:
    spec = parse_agent(manifest()).spec
    record = AgentRecord("id-1", "t", "a", {}, {}, spec, AgentStatus(), 1, 1, utcnow(), None)
    config = ControllerConfig(
        gateway_url="http://10.89.0.1:8091", egress_proxy_url="http://10.89.0.1:8092"
    )
    reconciler = AgentReconciler(
        cast(AgentStore, _Store()),
        {},
        config,
        versions=cast(VersionPoller, None),
        want_schedule=lambda: None,
    )
    env = (await reconciler._sandbox_spec(record, "sb-1")).env
    assert env["AGENTOS_AGENT_TOKEN"] == "aosa_issued"
    assert env["HTTPS_PROXY"] == "http://agent:aosa_issued@10.89.0.1:8092"
    assert env["NO_PROXY"] == "10.89.0.1"
    without_gateway = AgentReconciler(
        cast(AgentStore, _Store()),
        {},
        ControllerConfig(egress_proxy_url="http://10.89.0.1:8092"),
        versions=cast(VersionPoller, None),
        want_schedule=lambda: None,
    )
    assert "HTTPS_PROXY" not in (await without_gateway._sandbox_spec(record, "sb-1")).env


def test_the_gateway_binds_an_address_no_interface_has_yet() -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface: bound anyway, as the sandbox bridge's
    # address is before the bridge exists.
    sockets = bind_sockets(["127.0.0.1", "192.0.2.1"], 0)
    try:
        assert [s.getsockname()[0] for s in sockets] == ["127.0.0.1", "192.0.2.1"]
    finally:
        for sock in sockets:
            sock.close()

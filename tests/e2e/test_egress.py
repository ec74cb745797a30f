"""Egress end to end: `agentos serve` starts the egress proxy with the gateway, each sandbox
gets proxy variables carrying its own credential, and the proxy lets through only what the
agent's `spec.network.egress` lists (architecture/networking.md, "Egress").

The sandboxes are of class `process` (the host's network): this shows the wiring, not the
isolation, which needs the per-sandbox network namespaces.
"""

from __future__ import annotations

import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.runs_plane import AGENT, ROOT, Plane, tenant_name

pytestmark = [pytest.mark.postgres, pytest.mark.nats]


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"reached " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


@pytest.fixture
def plane(tmp_path: Path, pg_url: str, upstream: int) -> Iterator[Plane]:
    from tests.conftest import service_setting

    control = Plane(tmp_path, pg_url, service_setting("AGENTOS_NATS_URL", "NATS JetStream"))
    control.env["AGENTOS_EGRESS_RESOLVE"] = "up.test=127.0.0.1,other.test=127.0.0.1"
    control.start()
    try:
        yield control
    finally:
        control.stop()


def _apply(plane: Plane, tenant: str, port: int) -> None:
    manifest = {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "egress"},
        "spec": {
            "image": "local/counting-agent",
            "command": [sys.executable, str(AGENT)],
            "runtime": {"class": "process"},
            "readiness": {"heartbeat": {}, "periodSeconds": 1},
            "env": [
                {"name": "PYTHONPATH", "value": str(ROOT / "sdk" / "python")},
                {"name": "COUNT_DIR", "value": str(plane.counts)},
            ],
            "network": {"egress": [{"host": "up.test", "ports": [port]}]},
        },
    }
    answer = plane.http.post(f"/api/v1/tenants/{tenant}/agents", json=manifest)
    assert answer.status_code == 201, answer.text
    plane.wait_agent(tenant, "egress", "Ready")


def test_a_sandbox_reaches_its_allowed_host_through_the_proxy_and_nothing_else(
    plane: Plane, upstream: int
) -> None:
    tenant = tenant_name()
    _apply(plane, tenant, upstream)
    env = plane.sandbox_env(tenant, "egress")
    proxy_port = plane.env["AGENTOS_EGRESS_PROXY_PORT"]
    expected = f"http://agent:{env['AGENTOS_AGENT_TOKEN']}@127.0.0.1:{proxy_port}"
    assert env["HTTP_PROXY"] == env["HTTPS_PROXY"] == env["https_proxy"] == expected
    assert env["NO_PROXY"] == "127.0.0.1"
    # The agent still runs its runs: the SDK does not send gateway traffic to the proxy.
    run = plane.wait_run(tenant, plane.submit(tenant, "egress", {"steps": 1}))
    assert run["status"]["phase"] == "Succeeded", run

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": expected}))
    with opener.open(f"http://up.test:{upstream}/hello", timeout=10) as answer:
        assert answer.read() == b"reached /hello"
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(f"http://other.test:{upstream}/", timeout=10)
    assert refused.value.code == 403
    assert '"reason": "not_allowed"' in plane.log_tail()

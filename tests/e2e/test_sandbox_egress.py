"""From inside real runc and gVisor sandboxes started by `agentos serve`: the gateway answers,
an allowlisted name is reached through the egress proxy (plain HTTP and CONNECT), a name not
on the list is refused (403) and counted, and with no egress nothing leaves; the host's
PostgreSQL, NATS, the REST API and the rest of the host stay unreachable.

The "outside" is an HTTP server this test starts on the host's loopback; the proxy is told
by AGENTOS_EGRESS_RESOLVE that `allowed.test` and `denied.test` are there (it trusts those
addresses; without the override it refuses loopback). The sandbox itself has no DNS.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from harness.ports import free_port
from tests.conftest import SERVICES_ENV, service_setting
from tests.e2e.runs_plane import Plane
from tests.e2e.test_sandbox_network_crash import CONTAINERD_KEYS

pytestmark = [pytest.mark.containerd, pytest.mark.postgres, pytest.mark.nats]

MARKER = "hello-from-outside"
# Run inside the sandbox: argv[1] = JSON {"port", "direct": [[host, port], ...]}; writes what
# it saw to argv[2].
CHECK = r"""
import base64, json, os, socket, sys, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit
args, out = json.loads(sys.argv[1]), {}
port = args["port"]

def fetch(opener, url):
    try:
        with opener.open(url, timeout=10) as r:
            return [r.status, r.read().decode()]
    except urllib.error.HTTPError as e:
        return [e.code, ""]
    except Exception as e:
        return ["error", repr(e)]

direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
out["gateway"] = fetch(direct, os.environ["AGENTOS_GATEWAY_URL"] + "/healthz")
proxied = urllib.request.build_opener()  # HTTP_PROXY from the sandbox's environment
for name in ("allowed.test", "denied.test"):
    out["http " + name] = fetch(proxied, f"http://{name}:{port}/hello")

def connect(name):
    proxy = urlsplit(os.environ["HTTPS_PROXY"])
    auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
    s = socket.create_connection((proxy.hostname, proxy.port), 10)
    s.sendall(f"CONNECT {name}:{port} HTTP/1.1\r\nHost: {name}:{port}\r\n"
              f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
    head = s.recv(4096).decode()
    code = int(head.split()[1])
    body = ""
    if code == 200:
        s.sendall(f"GET /hello HTTP/1.0\r\nHost: {name}\r\n\r\n".encode())
        chunks = []
        while (chunk := s.recv(4096)):
            chunks.append(chunk)
        body = b"".join(chunks).decode()
    s.close()
    return [code, body]

for name in ("allowed.test", "denied.test"):
    try:
        out["connect " + name] = connect(name)
    except Exception as e:
        out["connect " + name] = ["error", repr(e)]
try:
    socket.getaddrinfo("allowed.test", port)
    out["dns"] = "resolved"
except OSError as e:
    out["dns"] = "failed"

def reach(target):
    host, p = target
    try:
        socket.create_connection((host, p), timeout=2).close()
        return "open"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return type(e).__name__
with ThreadPoolExecutor(16) as pool:
    for target, seen in zip(args["direct"], pool.map(reach, args["direct"])):
        out["direct %s:%s" % tuple(target)] = seen
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
"""


class Outside(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = MARKER.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture(scope="module")
def outside() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Outside)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, outside: int, plane_database: str
) -> Iterator[Plane]:
    tmp = tmp_path_factory.mktemp("egress")
    control = Plane(tmp, plane_database, service_setting("AGENTOS_NATS_URL", "NATS JetStream"))
    bridge = "10.89.0.1"
    gateway_port = control.env["AGENTOS_GATEWAY_PORT"]
    control.env |= {k: SERVICES_ENV.get(k) or os.environ.get(k, "") for k in CONTAINERD_KEYS}
    control.env |= {
        "CONTAINERD_NAMESPACE": f"agentos-egress-{uuid.uuid4().hex[:8]}",
        "AGENTOS_SANDBOX_DIR": str(tmp / "sandboxes"),
        "AGENTOS_RUNTIME": "containerd",
        "AGENTOS_GATEWAY_HOST": f"127.0.0.1,{bridge}",
        "AGENTOS_GATEWAY_URL": f"http://{bridge}:{gateway_port}",
        "AGENTOS_EGRESS_PROXY_PORT": str(free_port()),
        "AGENTOS_EGRESS_RESOLVE": "allowed.test=127.0.0.1,denied.test=127.0.0.1",
    }
    control.start()
    try:
        yield control
    finally:
        control.stop()
        asyncio.run(_remove_all(control.env))
        subprocess.run(
            ["ctr", "--address", control.env["CONTAINERD_ADDRESS"], "namespaces", "rm",
             control.env["CONTAINERD_NAMESPACE"]],
            capture_output=True, check=False,
        )  # fmt: skip


async def _remove_all(env: dict[str, str]) -> None:
    runtime = ContainerdRuntime.from_env(env)
    try:
        for sandbox in await runtime.list_sandboxes():
            await runtime.remove(sandbox)
    finally:
        await runtime.close()


def _apply(plane: Plane, tenant: str, name: str, runtime_class: str, egress: list[Any]) -> None:
    manifest = {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "image": f"oci-archive:{service_setting('AGENTOS_PYTHON_IMAGE_ARCHIVE', 'image')}",
            "command": ["python3", "-c", "import threading; threading.Event().wait()"],
            "runtime": {"class": runtime_class},
            "readiness": {"exec": {"command": ["python3", "-c", "pass"]}, "periodSeconds": 1},
            "network": {"egress": egress},
        },
    }
    answer = plane.http.post(f"/api/v1/tenants/{tenant}/agents", json=manifest)
    assert answer.status_code == 201, answer.text
    try:
        plane.wait_agent(tenant, name, "Ready", timeout_s=120)
    except AssertionError as err:
        raise AssertionError(f"{err}: {plane.agent(tenant, name)['status']}") from None


def _check(plane: Plane, tenant: str, name: str, port: int) -> dict[str, Any]:
    """Run CHECK in the agent's sandbox; what it saw."""
    sandbox = plane.agent(tenant, name)["status"]["sandboxID"]
    pg = urlsplit(plane.env["AGENTOS_DATABASE_URL"]).port
    nats = urlsplit(service_setting("AGENTOS_NATS_URL", "NATS")).port
    bridge = "10.89.0.1"
    direct = [[bridge, pg], [bridge, nats], [bridge, plane.port], [bridge, port], [bridge, 53]]
    direct += [["1.1.1.1", 443], ["127.0.0.1", plane.port]]
    args = json.dumps({"port": port, "direct": direct})

    async def run() -> dict[str, Any]:
        runtime = ContainerdRuntime.from_env(plane.env)
        try:
            out = runtime.sandbox_dir(sandbox) / "agentos" / "check.json"
            code = await runtime.exec(
                sandbox, ["python3", "-c", CHECK, args, "/agentos/check.json"], 90
            )
            assert code == 0, await runtime.logs(sandbox)
            seen: dict[str, Any] = json.loads(Path(out).read_text())
            return seen
        finally:
            await runtime.close()

    return asyncio.run(run())


def _refusals(plane: Plane) -> float:
    text = httpx.get(f"{plane.base}/metrics").text
    found = re.search(r'^agentos_egress_refusals_total\{reason="not_allowed"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("runtime_class", ["runc", "gvisor"])
def test_a_sandbox_reaches_the_gateway_and_only_its_allowed_hosts(
    plane: Plane, outside: int, runtime_class: str
) -> None:
    tenant = f"e-{uuid.uuid4().hex[:6]}"
    name = f"egress-{runtime_class}"
    _apply(plane, tenant, name, runtime_class, [{"host": "allowed.test", "ports": [outside]}])
    refused_before = _refusals(plane)

    seen = _check(plane, tenant, name, outside)

    assert seen.pop("gateway")[0] == 200, seen
    assert seen.pop("http allowed.test") == [200, MARKER], seen
    assert seen.pop("http denied.test")[0] == 403, seen
    code, body = seen.pop("connect allowed.test")
    assert code == 200 and body.endswith(MARKER), (code, body)
    assert seen.pop("connect denied.test")[0] == 403, seen
    assert seen.pop("dns") == "failed", "the sandbox has no DNS"
    assert "open" not in seen.values(), f"reached directly: {seen}"
    assert _refusals(plane) >= refused_before + 2, "each refusal is counted"


def test_with_no_egress_nothing_leaves(plane: Plane, outside: int) -> None:
    tenant = f"e-{uuid.uuid4().hex[:6]}"
    _apply(plane, tenant, "no-egress", "runc", [])

    seen = _check(plane, tenant, "no-egress", outside)

    assert seen.pop("gateway")[0] == 200, seen
    for via in ("http", "connect"):
        for name in ("allowed.test", "denied.test"):
            assert seen.pop(f"{via} {name}")[0] == 403, (via, name, seen)
    assert seen.pop("dns") == "failed"
    assert "open" not in seen.values(), f"reached directly: {seen}"

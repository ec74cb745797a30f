"""Run notifications end to end (architecture/runs.md, Notify): `serve` without the relay,
`agentos relay` as its own process (which sends the notifications), a webhook receiver
started by the test. Exactly one acknowledged, signed notification per finished run, also
across a kill -9 of the relay; addresses the egress rules refuse are never called."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from controlplane.data.tables import run_notifications
from controlplane.data.tables import runs as runs_table
from controlplane.domain.runs.notify import DELIVERY_HEADER, SIGNATURE_HEADER, verify
from controlplane.messaging.embedded import nats_server_binary
from harness.ports import free_port
from harness.waiting import wait_until
from tests.e2e.runs_plane import CLI, ROOT, Plane, tenant_name

pytestmark = [pytest.mark.postgres, pytest.mark.nats]
SECRET = "s3cret-for-hooks"
HOOK_HOST = "hooks.test"  # AGENTOS_EGRESS_RESOLVE points it at the receiver on loopback


class Receiver:
    """A webhook receiver: records every POST; answers 503 to the first attempt of each
    delivery id (so every notification is retried), 200 to the others."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                delivery = self.headers.get(DELIVERY_HEADER, "")
                with receiver.lock:
                    seen = any(p["delivery"] == delivery for p in receiver.posts)
                    status = 200 if seen else 503
                    receiver.posts.append(
                        {
                            "delivery": delivery,
                            "signature": self.headers.get(SIGNATURE_HEADER, ""),
                            "body": body,
                            "status": status,
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> dict[str, list[dict[str, Any]]]:
        """The 200-answered posts by run name."""
        out: dict[str, list[dict[str, Any]]] = {}
        with self.lock:
            for post in self.posts:
                if post["status"] == 200:
                    name = json.loads(post["body"])["run"]["metadata"]["name"]
                    out.setdefault(name, []).append(post)
        return out


@pytest.fixture(scope="module")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS of this module's own: a run controller deletes the run consumers of agents
    its database does not know, so planes on one shared NATS would delete each other's."""
    port = free_port()
    store = tmp_path_factory.mktemp("nats")
    server = subprocess.Popen(
        [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"nats://127.0.0.1:{port}"
        wait_until(lambda: _listening(port), 30, "nats-server listening")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, plane_database: str, private_nats: str
) -> Iterator[Plane]:
    control = Plane(tmp_path_factory.mktemp("hooks"), plane_database, private_nats)
    control.env["AGENTOS_COMPONENTS"] = "api,controller,gateway"
    control.env["AGENTOS_EGRESS_RESOLVE"] = f"{HOOK_HOST}=127.0.0.1"
    control.env["AGENTOS_NOTIFY_POLL_INTERVAL_S"] = "0.1"
    control.start()
    try:
        yield control
    finally:
        control.stop()


def _relay(plane: Plane) -> subprocess.Popen[bytes]:
    log = open(plane.tmp / "relay.log", "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            [*CLI, "relay"], env=plane.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
    finally:
        log.close()


def _create(plane: Plane, tenant: str, url: str, run_input: Any) -> Any:
    notify = {"url": url, "secret": SECRET}
    return plane.http.post(
        f"/api/v1/tenants/{tenant}/agents/hooked/runs", json={"input": run_input, "notify": notify}
    )


def test_each_finished_run_is_notified_once_signed_across_a_kill_9_of_the_relay(
    plane: Plane,
) -> None:
    receiver = Receiver()
    relay = _relay(plane)
    try:
        tenant = tenant_name()
        plane.apply_agent(tenant, "hooked", concurrency=3)
        url = f"http://{HOOK_HOST}:{receiver.port}/hook"
        names = [
            _create(plane, tenant, url, run_input).json()["metadata"]["name"]
            for run_input in ({"steps": 1}, {"steps": 1, "raise": True}, {"steps": 1, "sleep": 60})
        ]
        assert plane.http.post(f"/api/v1/tenants/{tenant}/runs/{names[2]}/cancel").is_success
        wait_until(lambda: len(receiver.posts) >= 1, 60, "a first notification attempt")
        relay.send_signal(signal.SIGKILL)  # mid-way: attempts failed, retries due
        relay.wait(timeout=10)
        relay = _relay(plane)
        wait_until(
            lambda: set(receiver.accepted()) == set(names),
            60,
            f"every run notified: {names} {[plane.run(tenant, n)['status'] for n in names]}",
        )
        # Every delivery settled in the store: the notifier sends no undelivered row again.
        wait_until(
            lambda: all(r["delivered_at"] for r in _notifications(plane, names)),
            30,
            "every notification recorded as delivered",
        )
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=30)
        receiver.server.shutdown()

    accepted = receiver.accepted()
    phases = {n: plane.run(tenant, n)["status"]["phase"] for n in names}
    assert list(phases.values()) == ["Succeeded", "Failed", "Canceled"]
    for name in names:
        [post] = accepted[name]
        body = json.loads(post["body"])
        assert body["type"] == {"Succeeded": "run.succeeded", "Failed": "run.failed"}.get(
            phases[name], "run.canceled"
        )
        assert body["run"]["status"]["phase"] == phases[name]
        assert verify(SECRET, post["signature"], post["body"], int(time.time()))
        assert not verify("another-secret", post["signature"], post["body"], int(time.time()))
        assert not verify(SECRET, post["signature"], post["body"] + b" ", int(time.time()))
        tries = [p for p in receiver.posts if p["delivery"] == post["delivery"]]
        assert len(tries) >= 2 and {p["status"] for p in tries} == {503, 200}
        assert SECRET not in json.dumps(plane.run(tenant, name)), "the secret is never shown"


def _notifications(plane: Plane, runs: list[str]) -> list[dict[str, Any]]:
    """The delivery records of these runs (by run name), as the notifier keeps them."""

    async def read() -> list[dict[str, Any]]:
        engine = create_async_engine(plane.env["AGENTOS_DATABASE_URL"])
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    select(run_notifications.c.delivered_at, run_notifications.c.gave_up_at)
                    .join(runs_table, runs_table.c.id == run_notifications.c.run_id)
                    .where(runs_table.c.name.in_(runs))
                )
                return [dict(r._mapping) for r in rows]
        finally:
            await engine.dispose()

    found = asyncio.run(read())
    return found if len(found) == len(runs) else []


def test_a_loopback_target_is_refused_at_create_and_a_name_resolving_to_one_is_never_called(
    plane: Plane,
) -> None:
    receiver = Receiver()
    relay = _relay(plane)
    try:
        tenant = tenant_name()
        plane.apply_agent(tenant, "hooked")
        refused = _create(plane, tenant, f"http://127.0.0.1:{receiver.port}/", {"steps": 1})
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["pointer"] == "/notify/url"
        answer = _create(plane, tenant, f"http://localhost:{receiver.port}/", {"steps": 1})
        assert answer.status_code == 201, answer.text
        name = answer.json()["metadata"]["name"]
        plane.wait_run(tenant, name)
        # The notifier has looked at it and given up on the address, without a call.
        wait_until(
            lambda: all(r["gave_up_at"] for r in _notifications(plane, [name])),
            30,
            "the notifier refusing the address",
        )
        assert receiver.posts == []
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=30)
        receiver.server.shutdown()

"""Property-based tests of the REST API from its own OpenAPI document (schemathesis), on
real PostgreSQL, as a platform admin: no 5xx, every response conforms to the document, and
every error is problem+json with a code from the catalogue.

Bounded (a few examples per operation) so it stays a small part of `make test`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from controlplane.api.app import create_app
from controlplane.api.errors import CATALOGUE, PROBLEM
from controlplane.bootstrap import Container
from controlplane.config import Settings
from controlplane.service.tokens import create_token
from harness.ports import free_port
from harness.waiting import wait_until

pytestmark = pytest.mark.postgres


class ServerThread:
    """Agent OS's API on a loopback port, in a thread with its own event loop."""

    def __init__(self, url: str, state: Path) -> None:
        self.port = free_port()
        self.settings = Settings(
            database_url=url,
            state_dir=state,
            rate_limit_per_s=0,
            watch_max_timeout_s=0.5,
            watch_poll_interval_s=0.1,
        )
        self.token = ""
        self.server: uvicorn.Server | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        container = Container(self.settings)
        async with container.uow() as uow:
            self.token = (await create_token(uow, "fuzz", platform_admin=True)).token
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(container), host="127.0.0.1", port=self.port, log_config=None)
        )
        await self.server.serve()
        await container.close()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server is not None and self.server.started, 60, "API up")
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def api_server(pg_url: str, tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(pg_url, tmp_path / "state") as server:
        yield server


def _document() -> dict[str, Any]:
    # The document needs no database (the engine connects on first use). Loaded here, not
    # from a fixture: schemathesis' lazy loader does not work with this pytest.
    container = Container(Settings(database_url="sqlite+aiosqlite:///:memory:"))
    return create_app(container).openapi()


# A schema-valid request may still be refused with 400 BAD_REQUEST when it carries an
# opaque value the API did not issue (a `continue` token): no schema can describe those.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
            }
        }
    }
)
schema = schemathesis.openapi.from_dict(_document(), config=CONFIG)


@schemathesis.check
def errors_are_problems_from_the_catalogue(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx/5xx is application/problem+json (RFC 9457) with a catalogue code."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type == PROBLEM, f"{response.status_code} answered as {content_type}"
    body = response.json()
    assert body["code"] in CATALOGUE, body
    assert body["status"] == response.status_code == CATALOGUE[body["code"]].http_status
    for key in ("type", "title", "detail", "instance"):
        assert isinstance(body[key], str), key


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure in CI is reproducible
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_its_openapi_contract(case: Any, api_server: ServerThread) -> None:
    case.call_and_validate(
        base_url=f"http://127.0.0.1:{api_server.port}",
        headers={"Authorization": f"Bearer {api_server.token}"},
        timeout=30,
        additional_checks=[errors_are_problems_from_the_catalogue],
    )

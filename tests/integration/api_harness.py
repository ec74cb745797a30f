"""An Agent OS API in the test's process, on a real database, with tokens to call it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from controlplane.api.app import create_app
from controlplane.bootstrap import Container
from controlplane.config import Settings
from controlplane.service.tokens import create_token

MANIFEST: dict[str, Any] = {
    "apiVersion": "agentos.io/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "agent-a", "labels": {"team": "a"}},
    "spec": {"image": "local/none", "runtime": {"class": "process"}, "command": ["true"]},
}


def manifest(name: str, **labels: str) -> dict[str, Any]:
    return {**MANIFEST, "metadata": {"name": name, "labels": labels or {"team": "a"}}}


@dataclass
class Api:
    container: Container
    app: FastAPI
    tokens: dict[str, str] = field(default_factory=dict)

    async def token(
        self,
        principal: str,
        *,
        tenant: str | None = None,
        role: str | None = None,
        platform_admin: bool = False,
        ttl_s: float | None = None,
    ) -> str:
        async with self.container.uow() as uow:
            issued = await create_token(
                uow,
                principal,
                tenant=tenant,
                role=role,
                platform_admin=platform_admin,
                ttl_s=ttl_s,
            )
        return issued.token

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://agentos.test",
            headers=headers,
            timeout=60,
        )


@contextlib.asynccontextmanager
async def running_api(url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[Api]:
    """The API app on the database at `url` (already migrated); no controller runs."""
    container = Container(Settings(database_url=url, state_dir=tmp_path / "state", **settings))
    try:
        yield Api(container, create_app(container))
    finally:
        await container.close()

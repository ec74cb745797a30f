"""The notifier: the loop that POSTs run notifications (webhooks) over HTTP, in every relay
process (`agentos relay`, and `serve` with the `relay` component). What it sends and when:
`service.run_notifications` (architecture/runs.md, Notify)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Mapping
from typing import Any

import httpx
import structlog

from controlplane.service.listing import UnitOfWorkFactory
from controlplane.service.run_notifications import NotifierConfig, deliver_due

log = structlog.get_logger("agentos.notifier")


def parse_resolve(text: str) -> dict[str, str]:
    """AGENTOS_EGRESS_RESOLVE, `name=ip,name2=ip2`, as a mapping from lower-case name to
    address (the egress proxy reads the same setting the same way). Raises ValueError."""
    overrides: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, address = entry.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"AGENTOS_EGRESS_RESOLVE: {entry!r} is not name=ip")
        overrides[name.strip().lower().rstrip(".")] = str(ipaddress.ip_address(address.strip()))
    return overrides


class Notifier:
    """Runs `deliver_due` until stopped: at once again while there was work, else every
    `poll_interval_s`. A failing pass (the database away) is logged and tried again."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        *,
        resolve_overrides: Mapping[str, str],
        poll_interval_s: float = 0.5,
        timeout_s: float = 10.0,
    ) -> None:
        self._uow = uow_factory
        self._config = NotifierConfig(resolve_overrides=dict(resolve_overrides))
        self._poll_s = poll_interval_s
        self._timeout_s = timeout_s

    async def run(self, stop: asyncio.Event) -> None:
        # No redirects (a 3xx could point anywhere, past the address check); no proxy from
        # the environment.
        async with httpx.AsyncClient(
            timeout=self._timeout_s, follow_redirects=False, trust_env=False
        ) as client:

            async def post(
                url: str, headers: dict[str, str], body: bytes, extensions: dict[str, Any]
            ) -> int:
                answer = await client.post(
                    url, content=body, headers=headers, extensions=extensions
                )
                return answer.status_code

            while not stop.is_set():
                try:
                    busy = await deliver_due(self._uow, post, config=self._config)
                except Exception as exc:  # the loop outlives a bad pass
                    log.warning("notifier pass failed", error=str(exc))
                    busy = 0
                if busy:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._poll_s)

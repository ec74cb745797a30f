"""Readiness probes that need no runtime internals: HTTP GET on loopback and heartbeat files."""

from __future__ import annotations

import time
from pathlib import Path

import httpx


async def http_get_ok(port: int, path: str, timeout_s: float) -> bool:
    """True if GET http://127.0.0.1:`port``path` answers 2xx or 3xx within `timeout_s`
    (Kubernetes httpGet probe semantics: 200 ≤ code < 400)."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(f"http://127.0.0.1:{port}{path}")
    except httpx.HTTPError:
        return False
    return 200 <= response.status_code < 400


def heartbeat_fresh(path: Path, max_age_s: float) -> bool:
    """True if the heartbeat file was touched within the last `max_age_s` seconds."""
    try:
        return time.time() - path.stat().st_mtime <= max_age_s
    except FileNotFoundError:
        return False

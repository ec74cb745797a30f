"""Readiness probes that need no runtime internals: HTTP GET and heartbeat files."""

from __future__ import annotations

import time
from pathlib import Path

import httpx


def probe_url(port: int, path: str, host: str = "127.0.0.1") -> str:
    """http://`host`:`port``path`, with a leading "/" added to `path` if it lacks one."""
    return f"http://{host}:{port}{path if path.startswith('/') else '/' + path}"


async def http_get_ok(
    port: int,
    path: str,
    timeout_s: float,
    client: httpx.AsyncClient | None = None,
    host: str = "127.0.0.1",
) -> bool:
    """True if GET `probe_url(port, path, host)` answers 2xx or 3xx within `timeout_s`
    (Kubernetes httpGet probe semantics: 200 ≤ code < 400). `client`: one to reuse across
    probes; else one is opened for this request. No proxy from the environment is used: the
    agent is on loopback or on the sandbox bridge."""
    url = probe_url(port, path, host)
    try:
        if client is not None:
            response = await client.get(url, timeout=timeout_s)
        else:
            async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as own:
                response = await own.get(url)
    except httpx.HTTPError:
        return False
    return 200 <= response.status_code < 400


def heartbeat_fresh(path: Path, max_age_s: float) -> bool:
    """True if the heartbeat file was touched within the last `max_age_s` seconds."""
    try:
        return time.time() - path.stat().st_mtime <= max_age_s
    except FileNotFoundError:
        return False

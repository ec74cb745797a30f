"""Settings from the environment the control plane gives every sandbox.

`AGENTOS_GATEWAY_URL` (required, e.g. `http://10.88.0.1:8090`), `AGENTOS_AGENT_TOKEN`
(required), `AGENTOS_RUN_CONCURRENCY` (runs at once, integer ≥ 1, default 1) and
`AGENTOS_HEARTBEAT_SECONDS` (seconds between heartbeats of each run, > 0, default 5);
source: architecture/gateway-protocol.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from agentos_sdk._core.errors import ConfigError

GATEWAY_URL = "AGENTOS_GATEWAY_URL"
AGENT_TOKEN = "AGENTOS_AGENT_TOKEN"  # noqa: S105 - the variable's name, not a secret
RUN_CONCURRENCY = "AGENTOS_RUN_CONCURRENCY"
HEARTBEAT_SECONDS = "AGENTOS_HEARTBEAT_SECONDS"


@dataclass(frozen=True)
class Settings:
    """The SDK's settings. `heartbeat_s` in seconds; `token` is never logged."""

    gateway_url: str
    token: str
    concurrency: int = 1
    heartbeat_s: float = 5.0

    def __repr__(self) -> str:
        return (
            f"Settings(gateway_url={self.gateway_url!r}, token='***', "
            f"concurrency={self.concurrency}, heartbeat_s={self.heartbeat_s})"
        )


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    gateway_url: str | None = None,
    token: str | None = None,
    concurrency: int | None = None,
    heartbeat_s: float | None = None,
) -> Settings:
    """Settings from keyword overrides, else from `environ` (default `os.environ`).

    Raises ConfigError naming the variable that is missing or malformed.
    """
    env = os.environ if environ is None else environ
    url = gateway_url or _required(env, GATEWAY_URL)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{GATEWAY_URL} must be an http(s) URL, got {url!r}")
    settings = Settings(
        gateway_url=url.rstrip("/"),
        token=token or _required(env, AGENT_TOKEN),
        concurrency=concurrency if concurrency is not None else _integer(env, RUN_CONCURRENCY),
        heartbeat_s=heartbeat_s if heartbeat_s is not None else _seconds(env, HEARTBEAT_SECONDS),
    )
    if settings.concurrency < 1:
        raise ConfigError(f"{RUN_CONCURRENCY} must be an integer ≥ 1, got {concurrency!r}")
    if not settings.heartbeat_s > 0:
        raise ConfigError(
            f"{HEARTBEAT_SECONDS} must be a number of seconds > 0, got {heartbeat_s!r}"
        )
    return settings


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(
            f"{name} is not set: the control plane sets it in the agent's sandbox; "
            "set it yourself to run the agent elsewhere"
        )
    return value


def _integer(env: Mapping[str, str], name: str, default: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name} must be an integer ≥ 1, got {raw!r}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float = 5.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {raw!r}")
    return value

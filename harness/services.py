"""The settings of the real services `make services` started (`.services/env`)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class ServiceMissing(RuntimeError):
    """A service (or a binary) the harness needs is not there: run `make services`."""


def services_env() -> dict[str, str]:
    """KEY=VALUE lines of `.services/env` (or of $AGENTOS_SERVICES_ENV)."""
    path = Path(os.environ.get("AGENTOS_SERVICES_ENV", ROOT / ".services" / "env"))
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key] = value
    return values


def service_setting(key: str, service: str) -> str:
    """`key` from the environment or `.services/env`. Raises ServiceMissing naming
    `make services`."""
    value = os.environ.get(key) or services_env().get(key)
    if not value:
        raise ServiceMissing(
            f"{service} is not available ({key} is not set): run `make services` first"
        )
    return value

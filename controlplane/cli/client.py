"""How the CLI reaches the API: URL and bearer token.

From, in order: the environment (`AGENTOS_API_URL`, `AGENTOS_TOKEN`), then the config file
`$XDG_CONFIG_HOME/agentos/config.yaml` (default `~/.config/agentos/config.yaml`) with keys
`apiUrl` and `token`, then the default URL `http://127.0.0.1:8080` (and no token).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import yaml

DEFAULT_API_URL = "http://127.0.0.1:8080"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "agentos" / "config.yaml"


def _config_file() -> dict[str, Any]:
    path = config_path()
    if not path.exists():
        return {}
    loaded = yaml.safe_load(path.read_text()) or {}
    return loaded if isinstance(loaded, dict) else {}


def api_settings() -> tuple[str, str | None]:
    """(API URL, token or None)."""
    config = _config_file()
    url = os.environ.get("AGENTOS_API_URL") or config.get("apiUrl") or DEFAULT_API_URL
    token = os.environ.get("AGENTOS_TOKEN") or config.get("token")
    return str(url), (str(token) if token else None)


def client() -> httpx.Client:
    """An HTTP client for the API, sending the bearer token when there is one."""
    url, token = api_settings()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, timeout=30, headers=headers)

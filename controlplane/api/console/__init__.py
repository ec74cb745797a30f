"""The web console at `/ui` (architecture/console.md, adr/0018-console.md): static files
only, built from `console/` by `make console` into `static/`. They are public; every datum
the page shows comes from the REST API with the user's bearer token, so this module reads no
database and no service (an import contract in pyproject.toml says so).

Responses under `/ui` carry a self-only Content-Security-Policy (W3C CSP Level 3) and the
usual hardening headers (OWASP Secure Headers): the page can load and connect to nothing
but this origin, and no other site can frame it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"
PREFIX = "/ui"
ENTRY_FILES = ("index.html", "app.js", "app.css")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cache-Control": "no-cache",
}


class ConsoleNotBuilt(RuntimeError):
    """The console's bundle is missing from the package (`make console` builds it)."""


def check_built(static_dir: Path = STATIC_DIR) -> None:
    """Raise ConsoleNotBuilt naming the missing files and the command that makes them."""
    missing = [name for name in ENTRY_FILES if not (static_dir / name).is_file()]
    if missing:
        raise ConsoleNotBuilt(
            f"the web console is not built: {', '.join(missing)} missing in {static_dir}; "
            "run `make console` (npm ci and esbuild in console/)"
        )


class ConsoleFiles(StaticFiles):
    """StaticFiles whose every answer carries SECURITY_HEADERS: only `/ui` traffic passes
    here, so the API's own routes and streams get no extra middleware."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_console(app: FastAPI, static_dir: Path = STATIC_DIR) -> None:
    """Serve `static_dir` at `/ui/` (index.html for `/ui/`, `/ui` redirects there) with the
    security headers above. Raises ConsoleNotBuilt when the bundle is missing."""
    check_built(static_dir)

    @app.get(PREFIX, include_in_schema=False)
    async def console_root() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=308, headers=SECURITY_HEADERS)

    app.mount(PREFIX, ConsoleFiles(directory=static_dir, html=True), name="console")


__all__ = ["ConsoleFiles", "ConsoleNotBuilt", "check_built", "mount_console"]

"""Run notifications (webhooks): the target a run names, the signature of what is sent, the
addresses never called, the retry schedule (architecture/runs.md, "Notify").

A run created with `"notify": {"url": "https://…", "secret"?: "…"}` is POSTed once it ends:
the body is JSON (`type`, `id`, `occurredAt`, `run`), and with a secret the header

    X-AgentOS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

(the scheme of Stripe's webhook signatures: the timestamp is signed with the body, so a
receiver can refuse stale replays). `X-AgentOS-Delivery` is the same for every attempt of
one notification (the run's terminal event id): receivers drop repeats by it.

The address rule is the egress proxy's (controlplane/gateway/egress_proxy.py, built in
parallel; to be unified): only global addresses are called, except names given in the static
override (AGENTOS_EGRESS_RESOLVE, `name=ip`), which are trusted as given.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from controlplane.domain.agents.egress import is_global
from controlplane.domain.agents.model import Strict

SIGNATURE_HEADER = "X-AgentOS-Signature"
DELIVERY_HEADER = "X-AgentOS-Delivery"
EVENT_HEADER = "X-AgentOS-Event"
A2A_TOKEN_HEADER = "X-A2A-Notification-Token"  # noqa: S105 - a header name
# http(s), a host (a name or an IPv4 literal: no user info), an optional port 0-65535.
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
URL_PATTERN = rf"^https?://[A-Za-z0-9._~!$&'()*+,;=%-]+(:{_PORT})?([/?#]\S*)?$"
MAX_ATTEMPTS = 10
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 300.0


class NotifyTarget(Strict):
    """Where a run's end is announced: an http(s) `url` (no user info), and an optional
    `secret` (8-256 characters) to sign with. The secret is stored, used, never shown."""

    url: str = Field(
        min_length=1, max_length=2048, pattern=URL_PATTERN, description="http:// or https://"
    )
    secret: str | None = Field(default=None, min_length=8, max_length=256, repr=False)

    @field_validator("url")
    @classmethod
    def http_url(cls, url: str) -> str:
        problem = url_problem(url)
        if problem:
            raise ValueError(problem)
        return url


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a notification target, or None: not http(s), no host, user info,
    or a literal address that is not global (names are checked when called)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "no user information in the URL"
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return None
    return address_problem(str(address))


def address_problem(address: str) -> str | None:
    """Why a resolved `address` is never called (loopback, private, link-local, multicast,
    reserved, unspecified: anything not global), or None."""
    if is_global(address):
        return None
    return f"{address} is not a global address (the egress rules refuse it)"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-AgentOS-Signature` value of `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance_s: int = 300) -> bool:
    """Whether `header` (an `X-AgentOS-Signature`) signs `body` with `secret` and is at
    most `tolerance_s` old at `now` (unix seconds). For receivers; constant-time."""
    fields = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def retry_after_s(attempts: int) -> float:
    """The wait after `attempts` failed attempts: 1 s doubling, at most 300 s."""
    return float(min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** max(0, attempts - 1)))

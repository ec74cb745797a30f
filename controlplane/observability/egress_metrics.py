"""Prometheus metrics of the egress proxy (architecture/networking.md, "Egress").

Labels are bounded, as everywhere in Agent OS: no tenant, agent or host is a label (the
log line of each refusal names them):

- `reason`: `REFUSAL_REASONS`;
- `method`: `connect` (a CONNECT tunnel) or `http` (a forwarded plain-HTTP request).
"""

from __future__ import annotations

from prometheus_client import Counter

REFUSAL_REASONS = (
    "unauthenticated",
    "not_allowed",
    "private_address",
    "resolve_failed",
    "connect_failed",
    "bad_request",
    "busy",
)
METHODS = ("connect", "http")

EGRESS_REFUSALS = Counter(
    "agentos_egress_refusals_total",
    "Requests the egress proxy refused, by reason (unauthenticated, not_allowed, "
    "private_address, resolve_failed, connect_failed, bad_request, busy).",
    ["reason"],
)
EGRESS_CONNECTIONS = Counter(
    "agentos_egress_connections_total",
    "Upstream connections the egress proxy opened for an allowed host, by method (connect, http).",
    ["method"],
)
for _reason in REFUSAL_REASONS:
    EGRESS_REFUSALS.labels(_reason)
for _method in METHODS:
    EGRESS_CONNECTIONS.labels(_method)


def record_refusal(reason: str) -> None:
    """Count one refusal; `reason` must be one of REFUSAL_REASONS."""
    EGRESS_REFUSALS.labels(reason if reason in REFUSAL_REASONS else "bad_request").inc()


def record_connection(method: str) -> None:
    """Count one upstream connection opened (`connect` or `http`)."""
    EGRESS_CONNECTIONS.labels(method).inc()

"""Prometheus metrics of warm pools (architecture/warm-pools.md).

Labels are bounded: `runtime_class` and `image` come from the configured pools only (a
handful), `result` is `claimed` (an agent took a warm sandbox) or `miss` (an agent matched a
pool that had none ready, and got a sandbox created for it).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Seconds; 0.05 is the claim → Ready goal (agent-sandbox's roadmap target).
CLAIM_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

POOL_SIZE = Gauge(
    "agentos_warm_pool_size",
    "Warm sandboxes started and waiting for an agent, per pool.",
    ["runtime_class", "image"],
)
CLAIMS = Counter(
    "agentos_warm_pool_claims_total",
    "Agents that matched a warm pool: claimed a warm sandbox, or missed (none was ready).",
    ["result"],
)
CLAIM_SECONDS = Histogram(
    "agentos_warm_pool_claim_seconds",
    "From claiming a warm sandbox (Scheduled → Starting) until the agent is Ready.",
    buckets=CLAIM_BUCKETS_S,
)


def pool_size(runtime_class: str, image: str, ready: int) -> None:
    """The pool of `runtime_class` and `image` has `ready` warm sandboxes."""
    POOL_SIZE.labels(runtime_class=runtime_class, image=image).set(ready)


def claim(claimed: bool) -> None:
    """An agent matched a pool: it claimed a sandbox (True) or missed (False)."""
    CLAIMS.labels(result="claimed" if claimed else "miss").inc()


def claim_ready(seconds: float) -> None:
    """An agent that claimed a warm sandbox became Ready `seconds` after the claim."""
    CLAIM_SECONDS.observe(seconds)

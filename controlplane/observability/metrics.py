"""Prometheus metrics of the agent lifecycle, the controller, the runtimes and the API
(architecture/slos.md). The outbox, relay and consumer metrics live in
`controlplane.messaging.metrics`.

Names follow the Prometheus conventions: an `agentos_` prefix, base units (`_seconds`),
`_total` for counters. No label carries an unbounded value: never an agent name or id, a
tenant, a raw URL path or an exception message. Labels take values from fixed sets:

- `runtime_class`: `runc`, `gvisor`, `process` (the Agent schema's enum);
- `runtime`: the backend's name (`containerd`, `process`, `kubernetes`, `simulated`);
- `reason`: `FAILURE_REASONS`, anything else is counted as `Other`;
- `route`: the route *template* (`/api/v1/tenants/{tenant}/agents/{name}`), `unmatched`
  for a path no route serves.

The SLIs of architecture/slos.md and the recording rules built on these series are in
deploy/prometheus/ (see its README).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram

from controlplane.domain.agents.lifecycle import IllegalTransition, Phase
from controlplane.domain.agents.model import RUNTIME_CLASSES
from controlplane.domain.errors import Conflict
from controlplane.domain.events.envelope import as_utc, parse_rfc3339
from controlplane.domain.records import AgentRecord
from controlplane.observability import tracing

# -- agent lifecycle --------------------------------------------------------------------------

# Seconds. 5 is a bucket boundary on purpose: the start-latency SLO (P95 ≤ 5 s) is computed
# as the share of starts in the le="5.0" bucket.
START_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 30, 60, 120)

AGENT_START_ATTEMPTS = Counter(
    "agentos_agent_start_attempts_total",
    "Start attempts: transitions Scheduled → Starting (the sandbox is about to be created).",
    ["runtime_class"],
)
AGENT_STARTS = Counter(
    "agentos_agent_starts_total",
    "Finished start attempts: Starting → Ready (result=success) or Starting → Failed "
    "(result=failure). An attempt cut short by a deletion is neither.",
    ["runtime_class", "result"],
)
AGENT_START_DURATION = Histogram(
    "agentos_agent_start_duration_seconds",
    "Time from an agent's creation (metadata.creationTimestamp) to its first Ready. "
    "Restarts and sandbox replacements are not observed here (see agentos_agent_starts_total).",
    ["runtime_class"],
    buckets=START_BUCKETS_S,
)
AGENT_FAILURES = Counter(
    "agentos_agent_failures_total",
    "Transitions to Failed, from any phase, by reason (a fixed set; others count as Other).",
    ["reason"],
)
AGENTS = Gauge("agentos_agents", "Agents by phase, as stored in the database.", ["phase"])

# Every reason the controller and the runtimes give a failure (CamelCase, as in conditions).
FAILURE_REASONS = frozenset(
    {
        # the controller
        "ReadinessTimeout",
        "SandboxExited",
        "ProbeFailed",
        # the runtimes (SandboxError.reason)
        "RuntimeUnavailable",
        "UnknownRuntimeClass",
        "ContainerdError",
        "CreateFailed",
        "StartFailed",
        "ImageNotFound",
        "ImageNotUnpacked",
        "InvalidImage",
        "InvalidSpec",
        "NoCommand",
        "NotFound",
        "ProbeUnsupported",
    }
)


def _initialise_lifecycle_series() -> None:
    # A series that appears with its first increment hides that increment from rate(): the
    # first failed start would not count against the SLO. Every known label value starts at 0.
    for runtime_class in RUNTIME_CLASSES:
        AGENT_START_ATTEMPTS.labels(runtime_class)
        AGENT_START_DURATION.labels(runtime_class)
        for result in ("success", "failure"):
            AGENT_STARTS.labels(runtime_class, result)
    for reason in (*FAILURE_REASONS, "Other"):
        AGENT_FAILURES.labels(reason)


def failure_reason(reason: str) -> str:
    """`reason` if it is one of `FAILURE_REASONS`, else `Other` (bounded cardinality)."""
    return reason if reason in FAILURE_REASONS else "Other"


def observe_transition(before: AgentRecord, after: AgentRecord) -> None:
    """Count a phase transition the controller made (`before` → `after`).

    Scheduled → Starting is a start attempt; Starting → Ready a successful start, Starting →
    Failed a failed one. The first Ready of an agent (no Ready condition before) observes its
    start duration: `status.readyAt - metadata.creationTimestamp`. Every → Failed counts
    its reason.
    """
    runtime_class = after.spec.runtime.class_
    src, dst = before.phase, after.phase
    if src is Phase.SCHEDULED and dst is Phase.STARTING:
        AGENT_START_ATTEMPTS.labels(runtime_class).inc()
    elif src is Phase.STARTING and dst is Phase.READY:
        AGENT_STARTS.labels(runtime_class, "success").inc()
        first_ready = not any(c["type"] == "Ready" for c in before.status.conditions)
        if first_ready and after.status.readyAt:
            took = parse_rfc3339(after.status.readyAt) - as_utc(after.created_at)
            AGENT_START_DURATION.labels(runtime_class).observe(max(took.total_seconds(), 0.0))
    elif src is Phase.STARTING and dst is Phase.FAILED:
        AGENT_STARTS.labels(runtime_class, "failure").inc()
    if dst is Phase.FAILED:
        AGENT_FAILURES.labels(failure_reason(after.status.reason or "")).inc()


_initialise_lifecycle_series()

# -- controller -------------------------------------------------------------------------------

RECONCILE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RECONCILE_DURATION = Histogram(
    "agentos_controller_reconcile_duration_seconds",
    "Time one reconcile of one agent took.",
    buckets=RECONCILE_BUCKETS_S,
)
RECONCILES = Counter(
    "agentos_controller_reconcile_total",
    "Reconciles by result: success, conflict (another writer moved the agent first; retried) "
    "or error (retried with backoff).",
    ["result"],
)
RECONCILE_ERRORS = Counter(
    "agentos_controller_reconcile_errors_total",
    "Reconciles that raised an unexpected error (result=error of the counter above).",
)
WORKQUEUE_DEPTH = Gauge(
    "agentos_workqueue_depth", "Items waiting in the work queue (not in process).", ["name"]
)
WORKQUEUE_ADDS = Counter("agentos_workqueue_adds_total", "Items put in the work queue.", ["name"])
WORKQUEUE_QUEUE_DURATION = Histogram(
    "agentos_workqueue_queue_duration_seconds",
    "Time an item waited in the work queue before a worker took it.",
    ["name"],
    buckets=RECONCILE_BUCKETS_S,
)


for _result in ("success", "conflict", "error"):
    RECONCILES.labels(_result)


@contextlib.contextmanager
def observe_reconcile(agent_id: str) -> Iterator[None]:
    """Time one reconcile, count its result, and trace it as a `reconcile` span (whose
    UnitOfWork spans and outbox events are its children)."""
    started = time.perf_counter()
    with tracing.tracer().start_as_current_span(
        "reconcile", attributes={"agentos.agent_id": agent_id}
    ):
        try:
            yield
        except (Conflict, IllegalTransition):
            RECONCILES.labels("conflict").inc()
            raise
        except Exception:
            RECONCILES.labels("error").inc()
            RECONCILE_ERRORS.inc()
            raise
        else:
            RECONCILES.labels("success").inc()
        finally:
            RECONCILE_DURATION.observe(time.perf_counter() - started)


# -- runtimes ---------------------------------------------------------------------------------

RUNTIME_OPERATIONS = Counter(
    "agentos_runtime_operations_total",
    "Sandbox runtime operations by backend, operation and result (ok or error).",
    ["runtime", "operation", "result"],
)
RUNTIME_OPERATION_DURATION = Histogram(
    "agentos_runtime_operation_duration_seconds",
    "Time a sandbox runtime operation took, by backend and operation.",
    ["runtime", "operation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# -- Kubernetes operator ----------------------------------------------------------------------

OPERATOR_LEADER = Gauge(
    "agentos_operator_leader",
    "1 while this operator holds the Lease and acts, 0 while it stands by.",
)
OPERATOR_APPLIES = Counter(
    "agentos_operator_applies_total",
    "Agent resources applied to the control plane, by result (changed, unchanged, refused, retry).",
    ["result"],
)
OPERATOR_STATUS_PATCHES = Counter(
    "agentos_operator_status_patches_total",
    "Status writes to Agent resources, by result (ok, gone, error).",
    ["result"],
)

# -- API --------------------------------------------------------------------------------------

API_REQUESTS = Counter(
    "agentos_api_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "code"],
)
API_REQUEST_DURATION = Histogram(
    "agentos_api_request_duration_seconds",
    "Time from receiving an HTTP request to the end of its response, by route template.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

"""Prometheus metrics of suspend and resume (adr/0019-suspend-resume.md). Labels from fixed
sets only: `runtime_class` (the Agent schema's), `result` (success, failure), `memory`
(kept, lost)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60)

AGENT_SUSPENDS = Counter(
    "agentos_agent_suspends_total",
    "Suspends the controller finished (Ready → Suspended, result=success) or gave up on "
    "(result=failure); memory=kept for a checkpoint, lost for a files-only stop.",
    ["runtime_class", "result", "memory"],
)
AGENT_RESUMES = Counter(
    "agentos_agent_resumes_total",
    "Resumes of suspended sandboxes (restore or a new task), by result.",
    ["runtime_class", "result", "memory"],
)
SUSPEND_DURATION = Histogram(
    "agentos_agent_suspend_duration_seconds",
    "Time of one runtime suspend (checkpoint and task removal, or stop).",
    ["runtime_class"],
    buckets=DURATION_BUCKETS_S,
)
RESUME_DURATION = Histogram(
    "agentos_agent_resume_duration_seconds",
    "Time of one runtime resume (restore, or a new task), until the task runs.",
    ["runtime_class"],
    buckets=DURATION_BUCKETS_S,
)
CHECKPOINT_BYTES = Gauge(
    "agentos_agent_checkpoint_image_bytes",
    "Bytes of checkpoint images on disk of suspended agents, by runtime class.",
    ["runtime_class"],
)


def memory_label(kept: bool) -> str:
    return "kept" if kept else "lost"

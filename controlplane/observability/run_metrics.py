"""Prometheus metrics of runs and of the model and tool calls they make
(architecture/runs.md, architecture/slos.md).

The run pipeline (service layer, gateway, run controller) calls one recording function per
fact; none of them takes a run id, an agent or a tenant, so every label is bounded:

- `result`: `succeeded`, `failed`, `canceled`, `timed_out` (the terminal `RunPhase`s);
- `reason`: a `RunReason` value, anything else is counted as `Other`;
- `outcome`: `delivered`, `redelivered`, `exhausted`;
- `phase`: the non-terminal `RunPhase`s;
- `gen_ai_operation_name`: the GenAI operations of `GENAI_OPERATIONS`, else `_OTHER`;
- `gen_ai_request_model`: at most `MAX_MODELS` distinct models per process, then `_OTHER`;
- `gen_ai_token_type`: `input`, `output`.

The `gen_ai_*` series are the OpenTelemetry GenAI semantic conventions' client metrics
(`gen_ai.client.token.usage`, unit `{token}`, and `gen_ai.client.operation.duration`, unit
`s`, with their recommended bucket boundaries) under the names an OpenTelemetry Prometheus
exporter gives them: dots become underscores, the unit `s` becomes `_seconds`, an annotation
unit such as `{token}` adds nothing (https://opentelemetry.io/docs/specs/semconv/gen-ai/).
`gen_ai.provider.name` is not a label: the control plane does not know the provider.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from controlplane.domain.events.envelope import as_utc, parse_rfc3339
from controlplane.domain.runs.lifecycle import TERMINAL, RunPhase, RunReason
from controlplane.domain.runs.model import RunRecord
from controlplane.domain.runs.steps import Step, StepType

# -- runs -------------------------------------------------------------------------------------

RESULTS: dict[RunPhase, str] = {
    RunPhase.SUCCEEDED: "succeeded",
    RunPhase.FAILED: "failed",
    RunPhase.CANCELED: "canceled",
    RunPhase.TIMED_OUT: "timed_out",
}
IN_FLIGHT_PHASES = tuple(p for p in RunPhase if p not in TERMINAL)
REASONS = frozenset(r.value for r in RunReason)

# Failed runs the platform failed, not the agent's code: the bad events of the run delivery
# SLO (architecture/slos.md). `Other` is a reason nobody classified: counted against the
# platform until someone does. deploy/prometheus/rules/slo.rules.yml matches the same set.
PLATFORM_FAILURE_REASONS = frozenset(
    {RunReason.DELIVERY_EXHAUSTED.value, RunReason.DISPATCH_FAILED.value, "Other"}
)

# Seconds. 1 is a bucket bound on purpose: the dispatch-latency SLO (P95 ≤ 1 s) is the share
# of first starts in le="1.0"; 0.015 and 0.05 are the benchmark's p50 and p99 goals.
DISPATCH_BUCKETS_S = (0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
QUEUE_WAIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
RUN_DURATION_BUCKETS_S = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400)

RUNS = Counter(
    "agentos_runs_total",
    "Runs that ended, by result (the terminal phase) and reason (a RunReason, else Other).",
    ["result", "reason"],
)
RUN_DURATION = Histogram(
    "agentos_run_duration_seconds",
    "Time from a run's creation to its terminal phase, by result.",
    ["result"],
    buckets=RUN_DURATION_BUCKETS_S,
)
RUN_QUEUE_WAIT = Histogram(
    "agentos_run_queue_wait_seconds",
    "Time from a run's creation to its first handler start, waiting for the agent included.",
    buckets=QUEUE_WAIT_BUCKETS_S,
)
RUN_DISPATCH = Histogram(
    "agentos_run_dispatch_seconds",
    "Time from a run's creation to its handler's start on attempt 1, for runs whose agent "
    "had a handler waiting: the run dispatch latency SLI.",
    buckets=DISPATCH_BUCKETS_S,
)
RUN_DELIVERIES = Counter(
    "agentos_run_deliveries_total",
    "Run deliveries by outcome: delivered (a handler took it), redelivered (sent back to "
    "the queue for another attempt), exhausted (the run failed with DeliveryExhausted).",
    ["outcome"],
)
RUNS_IN_FLIGHT = Gauge(
    "agentos_runs_in_flight",
    "Runs not yet ended, by phase, as stored in the database.",
    ["phase"],
)


def _initialise_run_series() -> None:
    # A series born with its first increment hides that increment from rate(): the first
    # failed run would not count against the SLO. Every known label value starts at 0.
    for result in RESULTS.values():
        RUN_DURATION.labels(result)
        RUNS.labels(result, "Other")
    for reason in RunReason:
        RUNS.labels(RESULTS[RunPhase.FAILED], reason.value)
    for outcome in ("delivered", "redelivered", "exhausted"):
        RUN_DELIVERIES.labels(outcome)
    for phase in IN_FLIGHT_PHASES:
        RUNS_IN_FLIGHT.labels(phase.value)


def run_reason(reason: str) -> str:
    """`reason` if it is a `RunReason` value, else `Other` (bounded cardinality)."""
    return reason if reason in REASONS else "Other"


def run_finished(phase: RunPhase, reason: str, duration_s: float) -> None:
    """Count a run that reached its terminal `phase` with `status.reason`, and observe its
    duration (creation → terminal, seconds; negative clock skew counts as 0). A run Failed
    with `DeliveryExhausted` also counts `agentos_run_deliveries_total{outcome="exhausted"}`.
    Call once per run, in the transaction's success path. Raises ValueError for a phase
    that is not terminal."""
    if phase not in RESULTS:
        raise ValueError(f"{phase} is not a terminal phase")
    result = RESULTS[phase]
    RUNS.labels(result, run_reason(reason)).inc()
    RUN_DURATION.labels(result).observe(max(duration_s, 0.0))
    if phase is RunPhase.FAILED and reason == RunReason.DELIVERY_EXHAUSTED:
        RUN_DELIVERIES.labels("exhausted").inc()


def observe_run_finished(run: RunRecord) -> None:
    """`run_finished` for a stored run in its terminal phase: its duration is
    `status.finishedAt` - creation. Raises ValueError for a run not ended (no terminal
    phase or no `finishedAt`)."""
    if run.status.finishedAt is None:
        raise ValueError(f"run {run.id} has no finishedAt")
    took = parse_rfc3339(run.status.finishedAt) - as_utc(run.created_at)
    run_finished(run.phase, run.status.reason, took.total_seconds())


def run_started(attempt: int, queue_wait_s: float, *, handler_was_waiting: bool = True) -> None:
    """Count a delivery a handler took (`attempt` = its delivery count, ≥ 1) and, on attempt
    1, observe the queue wait (creation → handler start, seconds) and the dispatch latency.

    `handler_was_waiting=False` keeps the run out of the dispatch-latency SLI: it waited for
    its agent (not Ready, or every concurrency slot busy), a wait that is the agent's, not
    the platform's. The gateway knows: its `runs:next` long poll began after the run's
    creation. Raises ValueError for an attempt below 1.
    """
    if attempt < 1:
        raise ValueError(f"attempt {attempt}: deliveries count from 1")
    RUN_DELIVERIES.labels("delivered").inc()
    if attempt == 1:
        wait = max(queue_wait_s, 0.0)
        RUN_QUEUE_WAIT.observe(wait)
        if handler_was_waiting:
            RUN_DISPATCH.observe(wait)


def run_redelivered() -> None:
    """Count a delivery sent back for another attempt (Running → Dispatched: the handler
    failed below maxAttempts, released the run, or its sandbox went away)."""
    RUN_DELIVERIES.labels("redelivered").inc()


def set_runs_in_flight(counts: dict[RunPhase, int]) -> None:
    """Set `agentos_runs_in_flight{phase}` for every non-terminal phase (0 when absent from
    `counts`; terminal phases in `counts` are ignored)."""
    for phase in IN_FLIGHT_PHASES:
        RUNS_IN_FLIGHT.labels(phase.value).set(counts.get(phase, 0))


_initialise_run_series()

# -- GenAI client metrics (model and tool calls) ---------------------------------------------

# The semantic conventions' ExplicitBucketBoundaries for these two instruments.
TOKEN_BUCKETS = tuple(4**i for i in range(14))  # 1, 4, 16, ... 67108864
OPERATION_BUCKETS_S = tuple(round(0.01 * 2**i, 2) for i in range(14))  # 0.01 ... 81.92

GENAI_OPERATIONS = frozenset(
    {"chat", "text_completion", "generate_content", "embeddings", "execute_tool", "invoke_agent"}
)
DEFAULT_OPERATION: dict[StepType, str | None] = {
    "llm": "chat",
    "tool": "execute_tool",
    "custom": None,  # the agent's own step: no GenAI operation
}
MAX_MODELS = 50
MAX_MODEL_CHARS = 100
OTHER = "_OTHER"  # the conventions' fallback value

GENAI_TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Number of input and output tokens used (OpenTelemetry gen_ai.client.token.usage, "
    "unit {token}), per model call step.",
    ["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"],
    buckets=TOKEN_BUCKETS,
)
GENAI_OPERATION_DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "GenAI operation duration (OpenTelemetry gen_ai.client.operation.duration, unit s): "
    "model calls and tool calls as their steps report them. error_type is _OTHER for a "
    "failed step.",
    ["gen_ai_operation_name", "gen_ai_request_model", "error_type"],
    buckets=OPERATION_BUCKETS_S,
)

_models: set[str] = set()


def model_label(model: str | None) -> str:
    """The `gen_ai_request_model` label of `model`: itself (cut to `MAX_MODEL_CHARS`) while
    fewer than `MAX_MODELS` distinct models were seen by this process, else `_OTHER`; ``
    for no model (a tool call)."""
    if not model:
        return ""
    model = model[:MAX_MODEL_CHARS]
    if model in _models:
        return model
    if len(_models) >= MAX_MODELS:
        return OTHER
    _models.add(model)
    return model


def operation_label(step_type: StepType, operation: str | None = None) -> str | None:
    """The `gen_ai.operation.name` of a step: `operation` when it is a GenAI operation
    (`_OTHER` when it is not), else the step type's default (`chat`, `execute_tool`); None
    for a `custom` step without one."""
    if operation is None:
        return DEFAULT_OPERATION[step_type]
    return operation if operation in GENAI_OPERATIONS else OTHER


def step_recorded(
    step_type: StepType,
    operation: str | None,
    model: str | None,
    input_tokens: int,
    output_tokens: int,
    duration_s: float,
    *,
    failed: bool = False,
) -> None:
    """Observe one recorded step in the GenAI client metrics.

    `operation` None takes the step type's default (`llm` → `chat`, `tool` →
    `execute_tool`); a `custom` step with none records nothing. `model` is the requested
    model of a model call (None for a tool). Token counts are observed when above 0 (the
    conventions report usage only when it is known); `duration_s` is the step's end - start
    in seconds. Call once per `callId`, when the step is first recorded.
    """
    name = operation_label(step_type, operation)
    if name is None:
        return
    model_name = model_label(model)
    error = OTHER if failed else ""
    GENAI_OPERATION_DURATION.labels(name, model_name, error).observe(max(duration_s, 0.0))
    for token_type, count in (("input", input_tokens), ("output", output_tokens)):
        if count > 0:
            GENAI_TOKEN_USAGE.labels(name, model_name, token_type).observe(count)


def step_duration_s(step: Step) -> float:
    """A step's end - start in seconds (0 when the clocks disagree)."""
    took = parse_rfc3339(step.endedAt) - parse_rfc3339(step.startedAt)
    return max(took.total_seconds(), 0.0)


def observe_step(step: Step) -> None:
    """`step_recorded` for a step as the SDK reports it: an `llm` step's name is its model
    (`run.chat(model=...)`), a `tool` step's the tool's; its usage and times are its own."""
    step_recorded(
        step.type,
        None,
        step.name if step.type == "llm" else None,
        step.usage.inputTokens,
        step.usage.outputTokens,
        step_duration_s(step),
        failed=step.status == "failed",
    )

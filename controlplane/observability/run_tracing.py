"""One trace per run, in the OpenTelemetry GenAI semantic conventions
(https://opentelemetry.io/docs/specs/semconv/gen-ai/; architecture/runs.md).

    <the create request's trace, carried by the run.dispatch message's `traceparent`>
    └─ invoke_agent {agent}          CLIENT, creation → terminal phase
       ├─ chat {model}               CLIENT, an `llm` step: start → end as the SDK reported
       │  └─ execute_tool {tool}     INTERNAL, a `tool` step whose parentCallId is that step
       └─ {name}                     INTERNAL, a `custom` step

No span is held open across processes: a run outlives any one of them. Every span is made
after the fact from recorded times (`start_time`/`end_time`, ns since the epoch), and its
span id is derived from the run's uid (and the step's `callId`), so a step recorded by one
gateway process while the run is Running is the child of the `invoke_agent` span that the
process ending the run emits later. The derivation needs `RunSpanIds`, the id generator
`tracing.configure_tracing` installs; under another provider the spans still share the
run's trace but the steps' parent is missing. Without a `traceparent` the run's trace id is
derived from its uid too.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util.types import AttributeValue

from controlplane.domain.events.envelope import as_utc, parse_rfc3339
from controlplane.domain.runs.lifecycle import RunPhase
from controlplane.domain.runs.model import RunRecord
from controlplane.domain.runs.steps import Step
from controlplane.observability import tracing

# (trace id or None to let the generator choose, span id) of the next span started here.
_forced: ContextVar[tuple[int | None, int] | None] = ContextVar("agentos_run_span", default=None)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAILED = frozenset({RunPhase.FAILED, RunPhase.TIMED_OUT})


class RunSpanIds(IdGenerator):
    """Random ids (the SDK's own), except for the spans `run_tracing` starts: those get the
    ids derived from their run and step."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        forced = _forced.get()
        return forced[1] if forced else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        forced = _forced.get()
        if forced and forced[0] is not None:
            return forced[0]
        return self._random.generate_trace_id()


def _digest(*parts: str, size: int) -> int:
    # A valid W3C id is not all zeros; SHA-256 giving 8 zero bytes is not a practical case.
    raw = hashlib.sha256("\x1f".join(("agentos.run", *parts)).encode()).digest()[:size]
    return int.from_bytes(raw, "big") or 1


def run_trace_id(run_id: str) -> int:
    """The trace id of a run that has no `traceparent` (128 bits from its uid)."""
    return _digest(run_id, size=16)


def run_span_id(run_id: str, call_id: str | None = None) -> int:
    """The span id (64 bits) of a run's `invoke_agent` span, or of its step `call_id`."""
    return _digest(run_id, call_id or "", size=8)


def _parent(traceparent: str | None) -> SpanContext:
    return trace.get_current_span(tracing.context_from_traceparent(traceparent)).get_span_context()


def run_context(run_id: str, traceparent: str | None) -> Context:
    """A context whose current span is the run's `invoke_agent` span (emitted or not): the
    parent of its steps. Its trace is `traceparent`'s, or `run_trace_id(run_id)`."""
    parent = _parent(traceparent)
    trace_id = parent.trace_id if parent.is_valid else run_trace_id(run_id)
    flags = parent.trace_flags if parent.is_valid else TraceFlags(TraceFlags.SAMPLED)
    span = SpanContext(trace_id, run_span_id(run_id), is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(span))


def _step_context(run_id: str, traceparent: str | None, parent_call_id: str) -> Context:
    run = trace.get_current_span(run_context(run_id, traceparent)).get_span_context()
    span = SpanContext(
        run.trace_id, run_span_id(run_id, parent_call_id), True, trace_flags=run.trace_flags
    )
    return trace.set_span_in_context(NonRecordingSpan(span))


@contextlib.contextmanager
def _ids(trace_id: int | None, span_id: int) -> Iterator[None]:
    token = _forced.set((trace_id, span_id))
    try:
        yield
    finally:
        _forced.reset(token)


def epoch_ns(moment: datetime | str) -> int:
    """An aware datetime or an RFC 3339 string as ns since the epoch (naive = UTC)."""
    value = parse_rfc3339(moment) if isinstance(moment, str) else as_utc(moment)
    return (value - _EPOCH) // timedelta(microseconds=1) * 1_000


def record_run_span(
    run: RunRecord, traceparent: str | None, *, tracer: trace.Tracer | None = None
) -> trace.Span:
    """Emit the `invoke_agent {agent}` span of a run that ended (creation →
    `status.finishedAt`, now when it has none), child of `traceparent` (the dispatch
    message's) or a root. Attributes: `gen_ai.operation.name=invoke_agent`,
    `gen_ai.agent.name` (the agent's name), `gen_ai.agent.id` (its uid), `agentos.run_id`,
    `agentos.tenant`, `agentos.run.phase`/`.reason`/`.attempt`, and the run's
    `gen_ai.usage.input_tokens`/`output_tokens`. Failed and TimedOut end in error status with
    `error.type` = the reason. Call once, when the run reaches its terminal phase; returns
    the ended span."""
    tracer = tracer or tracing.tracer()
    status = run.status
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": run.agent,
        "gen_ai.agent.id": run.agent_id,
        "agentos.run_id": run.id,
        "agentos.tenant": run.tenant,
        "agentos.run.phase": status.phase.value,
        "agentos.run.reason": status.reason,
        "agentos.run.attempt": status.attempt,
        "gen_ai.usage.input_tokens": status.usage.inputTokens,
        "gen_ai.usage.output_tokens": status.usage.outputTokens,
    }
    parent = tracing.context_from_traceparent(traceparent)
    root = not _parent(traceparent).is_valid
    with _ids(run_trace_id(run.id) if root else None, run_span_id(run.id)):
        span = tracer.start_span(
            f"invoke_agent {run.agent}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=epoch_ns(run.created_at),
        )
    if status.phase in _FAILED:
        span.set_attribute("error.type", status.reason or "_OTHER")
        span.set_status(Status(StatusCode.ERROR, status.message or status.reason))
    span.end(end_time=epoch_ns(status.finishedAt) if status.finishedAt else None)
    return span


def _step_span(step: Step, operation: str) -> tuple[str, SpanKind, Mapping[str, AttributeValue]]:
    if step.type == "llm":
        return (
            f"{operation} {step.name}",
            SpanKind.CLIENT,
            {
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": step.name,
                "gen_ai.usage.input_tokens": step.usage.inputTokens,
                "gen_ai.usage.output_tokens": step.usage.outputTokens,
            },
        )
    if step.type == "tool":
        return (
            f"execute_tool {step.name}",
            SpanKind.INTERNAL,
            {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": step.name},
        )
    return step.name, SpanKind.INTERNAL, {}


def record_step_span(
    run_id: str,
    traceparent: str | None,
    step: Step,
    *,
    tracer: trace.Tracer | None = None,
    operation: str = "chat",
) -> trace.Span:
    """Emit the span of one recorded step of run `run_id`, from `step.startedAt` to
    `step.endedAt`: `chat {model}` (an `llm` step, named by its model: `gen_ai.request.model`
    and the `gen_ai.usage.*` tokens), `execute_tool {tool}` (`gen_ai.tool.name`) or the
    custom step's name. Its parent is the step `parentCallId` names, else the run's
    `invoke_agent` span; every step span carries `agentos.run_id`, `agentos.step.call_id`,
    `agentos.step.type` and `agentos.step.attempt`. A failed step ends in error status with
    `error.type` = its error's type. Call once per `callId`, when it is first recorded;
    returns the ended span. `operation`: the GenAI operation of an `llm` step (`chat`,
    `embeddings`)."""
    tracer = tracer or tracing.tracer()
    name, kind, gen_ai = _step_span(step, operation)
    attributes: dict[str, AttributeValue] = {
        **gen_ai,
        "agentos.run_id": run_id,
        "agentos.step.call_id": step.callId,
        "agentos.step.type": step.type,
        "agentos.step.attempt": step.attempt,
    }
    if step.parentCallId:
        parent = _step_context(run_id, traceparent, step.parentCallId)
    else:
        parent = run_context(run_id, traceparent)
    with _ids(None, run_span_id(run_id, step.callId)):
        span = tracer.start_span(
            name,
            context=parent,
            kind=kind,
            attributes=attributes,
            start_time=epoch_ns(step.startedAt),
        )
    if step.error is not None:
        span.set_attribute("error.type", step.error.type)
        span.set_status(Status(StatusCode.ERROR, step.error.message or step.error.type))
    span.end(end_time=epoch_ns(step.endedAt))
    return span

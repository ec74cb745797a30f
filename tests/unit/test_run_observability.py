"""The run metrics and the run's trace as the pipeline records them (architecture/runs.md,
architecture/slos.md).

Counters are process-wide, so each metric test reads a sample before and after what it
does. Spans go to a private provider with the run id generator and an in-memory exporter."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from controlplane.domain.events.envelope import rfc3339
from controlplane.domain.runs.lifecycle import RunPhase, RunReason
from controlplane.domain.runs.model import RunRecord, RunSpec, RunStatus, Usage
from controlplane.domain.runs.steps import Step
from controlplane.observability import inventory, run_metrics
from controlplane.observability.run_tracing import (
    RunSpanIds,
    record_run_span,
    record_step_span,
    run_span_id,
    run_trace_id,
)
from tests.unit.promql_names import rule_groups

CREATED_AT = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def run_record(phase: RunPhase, reason: str, finished_after_s: float = 12.5) -> RunRecord:
    return RunRecord(
        id="run-uid-1",
        tenant="t1",
        agent_id="agent-uid-1",
        agent="helper",
        name="run-1",
        labels={},
        spec=RunSpec(timeoutSeconds=60),
        status=RunStatus(
            phase=phase,
            reason=reason,
            attempt=2,
            finishedAt=rfc3339(CREATED_AT + timedelta(seconds=finished_after_s)),
            usage=Usage(inputTokens=30, outputTokens=7),
        ),
        resource_version=5,
        created_at=CREATED_AT,
    )


def step(call_id: str, type_: str, name: str, *, parent: str | None = None, **kw: Any) -> Step:
    return Step.model_validate(
        {
            "callId": call_id,
            "type": type_,
            "name": name,
            "status": "failed" if "error" in kw else "succeeded",
            "startedAt": rfc3339(CREATED_AT + timedelta(seconds=1)),
            "endedAt": rfc3339(CREATED_AT + timedelta(seconds=3.25)),
            "parentCallId": parent,
            **kw,
        }
    )


# -- runs -------------------------------------------------------------------------------------


def test_a_finished_run_counts_its_result_and_reason_and_observes_its_duration() -> None:
    before = sample("agentos_runs_total", result="succeeded", reason="Completed")
    seconds = sample("agentos_run_duration_seconds_sum", result="succeeded")
    run_metrics.observe_run_finished(run_record(RunPhase.SUCCEEDED, "Completed"))
    assert sample("agentos_runs_total", result="succeeded", reason="Completed") == before + 1
    assert sample("agentos_run_duration_seconds_sum", result="succeeded") == seconds + 12.5


def test_a_reason_outside_the_run_reasons_is_counted_as_other() -> None:
    before = sample("agentos_runs_total", result="failed", reason="Other")
    run_metrics.run_finished(RunPhase.FAILED, "run-1234 exploded", 1.0)
    assert sample("agentos_runs_total", result="failed", reason="Other") == before + 1
    assert sample("agentos_runs_total", result="failed", reason="run-1234 exploded") == 0


def test_delivery_exhausted_counts_an_exhausted_delivery_too() -> None:
    before = sample("agentos_run_deliveries_total", outcome="exhausted")
    run_metrics.run_finished(RunPhase.FAILED, RunReason.DELIVERY_EXHAUSTED, 30.0)
    run_metrics.run_finished(RunPhase.FAILED, RunReason.HANDLER_ERROR, 30.0)
    assert sample("agentos_run_deliveries_total", outcome="exhausted") == before + 1


def test_only_a_terminal_phase_finishes_a_run() -> None:
    with pytest.raises(ValueError, match="not a terminal phase"):
        run_metrics.run_finished(RunPhase.RUNNING, "Started", 1.0)


def test_the_first_start_observes_queue_wait_and_dispatch_latency_a_redelivery_neither() -> None:
    waits = sample("agentos_run_queue_wait_seconds_count")
    dispatches = sample("agentos_run_dispatch_seconds_count")
    within_1s = sample("agentos_run_dispatch_seconds_bucket", le="1.0")
    delivered = sample("agentos_run_deliveries_total", outcome="delivered")
    run_metrics.run_started(1, 0.02)
    run_metrics.run_started(2, 40.0)
    assert sample("agentos_run_queue_wait_seconds_count") == waits + 1
    assert sample("agentos_run_dispatch_seconds_count") == dispatches + 1
    assert sample("agentos_run_dispatch_seconds_bucket", le="1.0") == within_1s + 1
    assert sample("agentos_run_deliveries_total", outcome="delivered") == delivered + 2


def test_a_run_that_waited_for_its_agent_is_not_in_the_dispatch_latency() -> None:
    waits = sample("agentos_run_queue_wait_seconds_count")
    dispatches = sample("agentos_run_dispatch_seconds_count")
    run_metrics.run_started(1, 90.0, handler_was_waiting=False)
    assert sample("agentos_run_queue_wait_seconds_count") == waits + 1
    assert sample("agentos_run_dispatch_seconds_count") == dispatches


def test_a_redelivery_is_counted() -> None:
    before = sample("agentos_run_deliveries_total", outcome="redelivered")
    run_metrics.run_redelivered()
    assert sample("agentos_run_deliveries_total", outcome="redelivered") == before + 1


async def test_runs_in_flight_are_set_for_every_non_terminal_phase_from_the_port() -> None:
    async def count() -> dict[RunPhase, int]:
        return {RunPhase.RUNNING: 3, RunPhase.PENDING: 1, RunPhase.SUCCEEDED: 99}

    counts = await inventory.refresh_run_phases(count)
    assert counts == {"Pending": 1, "Dispatched": 0, "Running": 3, "InputRequired": 0}
    assert sample("agentos_runs_in_flight", phase="Running") == 3
    assert sample("agentos_runs_in_flight", phase="Dispatched") == 0
    assert sample("agentos_runs_in_flight", phase="Succeeded") == 0


def test_every_failure_and_outcome_series_exists_before_its_first_increment() -> None:
    for reason in RunReason:
        assert (
            REGISTRY.get_sample_value(
                "agentos_runs_total", {"result": "failed", "reason": reason.value}
            )
            is not None
        ), reason
    for outcome in ("delivered", "redelivered", "exhausted"):
        assert REGISTRY.get_sample_value("agentos_run_deliveries_total", {"outcome": outcome})


def test_the_delivery_slo_counts_exactly_the_platform_failure_reasons() -> None:
    expr = next(
        r["expr"]
        for g in rule_groups()
        for r in g["rules"]
        if r.get("record") == "slo:sli_error:ratio_rate5m"
        and r["labels"]["slo"] == "run-delivery-success"
    )
    matched = re.search(r'reason=~"([^"]+)"', expr)
    assert matched, expr
    assert set(matched.group(1).split("|")) == run_metrics.PLATFORM_FAILURE_REASONS


# -- GenAI client metrics ---------------------------------------------------------------------


def test_a_model_call_step_observes_its_tokens_by_type_and_its_duration() -> None:
    labels = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "gpt-test"}
    inputs = sample("gen_ai_client_token_usage_sum", **labels, gen_ai_token_type="input")
    outputs = sample("gen_ai_client_token_usage_sum", **labels, gen_ai_token_type="output")
    seconds = sample("gen_ai_client_operation_duration_seconds_sum", **labels, error_type="")
    run_metrics.observe_step(
        step("1", "llm", "gpt-test", usage={"inputTokens": 120, "outputTokens": 8})
    )
    assert sample("gen_ai_client_token_usage_sum", **labels, gen_ai_token_type="input") == (
        inputs + 120
    )
    assert sample("gen_ai_client_token_usage_sum", **labels, gen_ai_token_type="output") == (
        outputs + 8
    )
    assert sample(
        "gen_ai_client_operation_duration_seconds_sum", **labels, error_type=""
    ) == pytest.approx(seconds + 2.25)


def test_a_failed_tool_call_observes_its_duration_with_an_error_type_and_no_tokens() -> None:
    labels = {"gen_ai_operation_name": "execute_tool", "gen_ai_request_model": ""}
    count = sample("gen_ai_client_operation_duration_seconds_count", **labels, error_type="_OTHER")
    run_metrics.observe_step(
        step("2", "tool", "calculator", error={"type": "ZeroDivisionError", "message": "x/0"})
    )
    assert sample(
        "gen_ai_client_operation_duration_seconds_count", **labels, error_type="_OTHER"
    ) == (count + 1)
    assert sample("gen_ai_client_token_usage_count", **labels, gen_ai_token_type="input") == 0


def test_a_custom_step_is_not_a_genai_operation() -> None:
    assert run_metrics.operation_label("custom") is None
    assert run_metrics.operation_label("llm", "embeddings") == "embeddings"
    assert run_metrics.operation_label("llm", "my-own-thing") == "_OTHER"


def test_models_beyond_the_bound_are_labelled_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_metrics, "_models", set())
    monkeypatch.setattr(run_metrics, "MAX_MODELS", 2)
    assert [run_metrics.model_label(m) for m in ("a", "b", "c", "a")] == ["a", "b", "_OTHER", "a"]
    assert run_metrics.model_label("x" * 500) == "_OTHER"
    assert run_metrics.model_label(None) == ""


def test_the_buckets_are_the_semantic_conventions() -> None:
    assert run_metrics.TOKEN_BUCKETS == (
        1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
    )  # fmt: skip
    assert run_metrics.OPERATION_BUCKETS_S == (
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    )  # fmt: skip
    assert 1 in run_metrics.DISPATCH_BUCKETS_S  # the dispatch SLO reads le="1.0"


# -- traces -----------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=RunSpanIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def test_a_run_is_one_trace_invoke_agent_over_its_steps_under_the_dispatch_traceparent(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    # Steps are recorded while the run is Running, before its invoke_agent span exists.
    record_step_span("run-uid-1", TRACEPARENT, step("1", "llm", "gpt-test"), tracer=tracer)
    tool = step("1.1", "tool", "calculator", parent="1")
    record_step_span("run-uid-1", TRACEPARENT, tool, tracer=tracer)
    record_run_span(run_record(RunPhase.SUCCEEDED, "Completed"), TRACEPARENT, tracer=tracer)

    found = by_name(exporter)
    assert set(found) == {"invoke_agent helper", "chat gpt-test", "execute_tool calculator"}
    run, chat, call = (
        found["invoke_agent helper"],
        found["chat gpt-test"],
        found["execute_tool calculator"],
    )
    assert {s.context.trace_id for s in found.values()} == {0x0AF7651916CD43DD8448EB211C80319C}
    assert run.parent is not None and run.parent.span_id == 0xB7AD6B7169203331
    assert chat.parent is not None and chat.parent.span_id == run.context.span_id
    assert call.parent is not None and call.parent.span_id == chat.context.span_id
    assert run.context.span_id == run_span_id("run-uid-1")


def test_the_invoke_agent_span_spans_creation_to_the_end_with_the_agent_attributes(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    run = record_run_span(
        run_record(RunPhase.SUCCEEDED, "Completed"), TRACEPARENT, tracer=provider.get_tracer("t")
    )
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.CLIENT
    assert span.start_time == 1_772_355_600 * 10**9
    assert span.end_time == span.start_time + 12_500_000_000
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "helper",
        "gen_ai.agent.id": "agent-uid-1",
        "agentos.run_id": "run-uid-1",
        "agentos.tenant": "t1",
        "agentos.run.phase": "Succeeded",
        "agentos.run.reason": "Completed",
        "agentos.run.attempt": 2,
        "gen_ai.usage.input_tokens": 30,
        "gen_ai.usage.output_tokens": 7,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert not run.is_recording()


def test_a_failed_run_ends_its_span_in_error_with_the_reason_as_error_type(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    record_run_span(
        run_record(RunPhase.FAILED, "DeliveryExhausted"), None, tracer=provider.get_tracer("t")
    )
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "DeliveryExhausted"
    # No traceparent: a root span on a trace derived from the run's uid.
    assert span.parent is None
    assert span.context.trace_id == run_trace_id("run-uid-1")


def test_a_chat_step_span_carries_its_model_and_tokens_from_its_recorded_times(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    llm = step("3", "llm", "gpt-test", usage={"inputTokens": 120, "outputTokens": 8})
    record_step_span("run-uid-1", None, llm, tracer=provider.get_tracer("t"))
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.CLIENT
    assert (span.end_time or 0) - (span.start_time or 0) == 2_250_000_000
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "gpt-test"
    assert attributes["gen_ai.usage.input_tokens"] == 120
    assert attributes["gen_ai.usage.output_tokens"] == 8
    assert span.parent is not None and span.parent.span_id == run_span_id("run-uid-1")
    assert span.context.trace_id == run_trace_id("run-uid-1")


def test_a_failed_tool_step_span_is_an_error_named_by_its_tool(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    failed = step("4", "tool", "writer", error={"type": "PermissionError", "message": "denied"})
    record_step_span("run-uid-1", TRACEPARENT, failed, tracer=provider.get_tracer("t"))
    (span,) = exporter.get_finished_spans()
    assert span.name == "execute_tool writer"
    assert span.kind is SpanKind.INTERNAL
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "writer"
    assert attributes["error.type"] == "PermissionError"
    assert span.status.status_code is StatusCode.ERROR


def test_spans_made_elsewhere_keep_random_ids(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("a"), tracer.start_as_current_span("b"):
        pass
    a, b = sorted(exporter.get_finished_spans(), key=lambda s: s.name)
    assert a.context.span_id != b.context.span_id
    assert a.context.span_id != run_span_id("run-uid-1")

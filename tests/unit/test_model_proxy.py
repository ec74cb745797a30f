"""The model proxy's rules without services: pricing, budgets, the rate limit, request and
provider validation, reading a stream (architecture/model-gateway.md)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest

from controlplane.domain.errors import BadRequest, BudgetExhausted, RateLimited, ValidationFailed
from controlplane.domain.providers.metering import (
    budget_refusal,
    budget_window,
    cost_usd,
    priced,
    usage_of,
)
from controlplane.domain.providers.model import Pricing, ProviderLimits, parse_provider
from controlplane.domain.runs.model import Usage
from controlplane.gateway.metering import RequestLimiter
from controlplane.gateway.model_proxy import parse_request
from controlplane.gateway.sse import StreamTap

PROVIDER: dict[str, Any] = {
    "baseUrl": "https://api.example.com/v1/",
    "credentialRef": {"env": "EXAMPLE_KEY"},
    "models": ["m-1", "m-2"],
    "pricing": {"input": "0.15", "output": 0.6, "cachedInput": "0.075"},
}


def test_cost_prices_uncached_input_cached_input_and_output_per_million_tokens() -> None:
    pricing = Pricing(input=Decimal("1"), output=Decimal("2"), cachedInput=Decimal("0.5"))
    usage = Usage(inputTokens=17, outputTokens=5, cachedInputTokens=4)
    assert cost_usd(usage, pricing) == Decimal(13 + 2 + 10) / 1_000_000
    assert priced(usage, pricing).costUsd == pytest.approx(25e-6)


def test_cached_input_without_its_own_price_is_priced_as_input() -> None:
    pricing = Pricing(input=Decimal("3"), output=Decimal("0"))
    assert cost_usd(Usage(inputTokens=10, cachedInputTokens=10), pricing) == Decimal(30) / 10**6


def test_usage_is_read_from_the_openai_usage_object_and_absent_without_one() -> None:
    body = {
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 1},
        }
    }
    assert usage_of(body) == Usage(
        inputTokens=9, outputTokens=3, cachedInputTokens=2, reasoningTokens=1
    )
    assert usage_of({"usage": None}) is None
    assert usage_of({"usage": {"prompt_tokens": -4, "completion_tokens": True}}) == Usage()


def test_a_spent_budget_is_refused_until_the_next_window_opens() -> None:
    limits = ProviderLimits(tokenBudget=100, budgetWindowSeconds=3600)
    now = 7200 + 600.0
    assert budget_window(now, 3600) == 7200
    assert budget_refusal(99, limits, now, "p") is None
    refusal = budget_refusal(100, limits, now, "p")
    assert isinstance(refusal, BudgetExhausted) and isinstance(refusal, RateLimited)
    assert refusal.retry_after_s == pytest.approx(3000)
    assert budget_refusal(10**9, ProviderLimits(), now, "p") is None  # no budget


def test_the_rate_limit_allows_a_minutes_burst_then_refuses_with_retry_after() -> None:
    limiter = RequestLimiter()
    for _ in range(3):
        limiter.take("t", "p", 3)
    with pytest.raises(RateLimited) as refused:
        limiter.take("t", "p", 3)
    assert 0 < refused.value.retry_after_s <= 20
    limiter.take("t", "other", 3)  # each provider has its own bucket
    limiter.take("t", "p", None)  # no limit


def test_a_provider_is_validated_and_named_by_its_path() -> None:
    spec = parse_provider(PROVIDER, "example")
    assert spec.name == "example" and spec.baseUrl == "https://api.example.com/v1"
    assert spec.pricing.output == Decimal("0.6")


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"baseUrl": "ftp://x"}, "/baseUrl"),
        ({"credentialRef": {"env": "A", "file": "/k"}}, "/credentialRef"),
        ({"credentialRef": {"file": "relative"}}, "/credentialRef/file"),
        ({"models": []}, "/models"),
        ({"pricing": {"input": True}}, "/pricing/input"),
        ({"limits": {"tokenBudget": 0}}, "/limits/tokenBudget"),
        ({"apiKey": "sk-inline"}, "/apiKey"),  # a secret cannot be written inline
    ],
)
def test_a_bad_provider_is_refused_naming_the_field(change: dict[str, Any], pointer: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_provider({**PROVIDER, **change}, "example")
    assert pointer in [e.pointer for e in refused.value.errors]


def test_a_body_named_otherwise_than_the_path_is_a_bad_request() -> None:
    """As Kubernetes answers a name that differs from the URL's (400, not a field error)."""
    with pytest.raises(BadRequest, match="'another' is not 'example'"):
        parse_provider({**PROVIDER, "name": "another"}, "example")


def test_the_answer_of_a_provider_holds_its_reference_never_a_secret() -> None:
    from datetime import UTC, datetime

    from controlplane.domain.providers.model import ProviderRecord

    record = ProviderRecord(
        "u", "t", "example", parse_provider(PROVIDER, "example"), 1, datetime.now(UTC)
    )
    view = record.to_object()
    assert view["spec"]["credentialRef"] == {"env": "EXAMPLE_KEY"}
    assert view["spec"]["pricing"]["input"] == "0.15"


@pytest.mark.parametrize(
    ("body", "operation", "pointer"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "chat", "/model"),
        ({"model": "m"}, "chat", "/messages"),
        ({"model": "m", "messages": [{}], "stream": "yes"}, "chat", "/stream"),
        ({"model": "m"}, "embeddings", "/input"),
    ],
)
def test_a_bad_model_request_is_refused_naming_the_field(
    body: dict[str, Any], operation: str, pointer: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_request(json.dumps(body).encode(), operation)
    assert refused.value.errors[0].pointer == pointer


def test_a_model_request_that_is_not_json_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        parse_request(b"{nope", "chat")


def test_the_stream_tap_reads_the_first_token_the_content_and_the_final_usage() -> None:
    events = [
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}},
    ]
    raw = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"
    tap = StreamTap(time.perf_counter())
    for i in range(0, len(raw), 7):  # any split
        tap.feed(raw[i : i + 7])
    assert tap.first_token_ms is not None
    assert tap.usage == Usage(inputTokens=4, outputTokens=2)
    completion = tap.completion()
    assert completion["id"] == "c1"
    assert completion["choices"][0]["message"]["content"] == "Hello"
    assert completion["choices"][0]["finish_reason"] == "stop"

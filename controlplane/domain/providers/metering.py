"""What a model call costs and whether a tenant may make it (architecture/model-gateway.md).

- `usage_of(body)`: the tokens of an OpenAI-compatible response's `usage` (chat completions
  and embeddings; the final chunk of a stream asked with `stream_options.include_usage`).
- `cost_usd(usage, pricing)`: priced per million tokens, in decimals; cached input tokens
  are part of `prompt_tokens` (the OpenAI API reference) and priced at `cachedInput`.
- `budget_window(now_s, window_s)` and `budget_refusal(...)`: the fixed window a call counts
  in and, when the budget is spent, how long until the next one (`Retry-After`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from controlplane.domain.errors import BudgetExhausted
from controlplane.domain.providers.model import Pricing, ProviderLimits
from controlplane.domain.runs.model import Usage

MILLION = Decimal(1_000_000)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_of(body: Mapping[str, Any] | None) -> Usage | None:
    """The token counts of an OpenAI-compatible response body, or None when it has no
    `usage` object: `prompt_tokens`, `completion_tokens`,
    `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`
    (negative or non-integer counts read as 0). Cost is left at 0 (see `priced`)."""
    usage = body.get("usage") if body else None
    if not isinstance(usage, Mapping):
        return None
    prompt = usage.get("prompt_tokens_details")
    completion = usage.get("completion_tokens_details")
    return Usage(
        inputTokens=_count(usage.get("prompt_tokens")),
        outputTokens=_count(usage.get("completion_tokens")),
        cachedInputTokens=_count(prompt.get("cached_tokens")) if isinstance(prompt, dict) else 0,
        reasoningTokens=(
            _count(completion.get("reasoning_tokens")) if isinstance(completion, dict) else 0
        ),
    )


def cost_usd(usage: Usage, pricing: Pricing) -> Decimal:
    """USD of `usage` at `pricing` (per million tokens): uncached input at `input`, cached
    input (at most the input) at `cachedInput` (else `input`), output at `output`."""
    cached = min(usage.cachedInputTokens, usage.inputTokens)
    cached_price = pricing.input if pricing.cachedInput is None else pricing.cachedInput
    total = (
        Decimal(usage.inputTokens - cached) * pricing.input
        + Decimal(cached) * cached_price
        + Decimal(usage.outputTokens) * pricing.output
    )
    return total / MILLION


def priced(usage: Usage, pricing: Pricing) -> Usage:
    """`usage` with its `costUsd` set from `pricing` (rounded to 1e-9 USD)."""
    return usage.model_copy(update={"costUsd": round(float(cost_usd(usage, pricing)), 9)})


def budget_window(now_s: float, window_s: int) -> int:
    """The start (seconds since the epoch) of the fixed window of `window_s` seconds that
    holds the instant `now_s`."""
    return int(now_s // window_s) * window_s


def budget_refusal(
    used_tokens: int, limits: ProviderLimits, now_s: float, provider: str
) -> BudgetExhausted | None:
    """BudgetExhausted when `used_tokens` in the current window reach `limits.tokenBudget`
    (None: no budget, or some left). A call is admitted while any budget is left, so the
    call that crosses the budget is served and counted (its size is unknown beforehand)."""
    if limits.tokenBudget is None or used_tokens < limits.tokenBudget:
        return None
    window = limits.budgetWindowSeconds
    retry_s = budget_window(now_s, window) + window - now_s
    return BudgetExhausted(
        f"the token budget of {limits.tokenBudget} tokens per {window}s on provider "
        f"{provider!r} is spent ({used_tokens} used); the next window opens in "
        f"{math.ceil(retry_s)}s",
        retry_after_s=retry_s,
    )

"""Token usage of an `llm` step, and how to read it from an OpenAI-compatible response."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentos_sdk._core.protocol import UsageBody


@dataclass(frozen=True)
class Usage:
    """Tokens of one model call (counts, not cost; the control plane prices them)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_openai(cls, response: Mapping[str, Any]) -> Usage | None:
        """The `usage` of an OpenAI-compatible chat completion, or None when it has none.

        Reads `prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`
        and `completion_tokens_details.reasoning_tokens` (the OpenAI API reference).
        """
        usage = response.get("usage")
        if not isinstance(usage, Mapping):
            return None
        prompt = usage.get("prompt_tokens_details") or {}
        completion = usage.get("completion_tokens_details") or {}
        return cls(
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cached_input_tokens=int(prompt.get("cached_tokens") or 0),
            reasoning_tokens=int(completion.get("reasoning_tokens") or 0),
        )

    def as_body(self) -> UsageBody:
        """The protocol's `Usage` object."""
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cachedInputTokens": self.cached_input_tokens,
            "reasoningTokens": self.reasoning_tokens,
        }

"""Exponential backoff with full jitter for relay retries."""

from __future__ import annotations

import random

from controlplane.messaging.relay import backoff_delay_s


def test_backoff_stays_within_the_exponential_envelope_and_the_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(10.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff_delay_s(attempt, 0.5, 10.0, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8, "jitter spreads over the whole window"

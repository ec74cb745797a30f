"""Rate limiting per principal: a token bucket in memory (one per process).

Each principal has a bucket of `burst` tokens refilled at `rate_per_s`; a request takes one,
and with none left it is refused with RateLimited, whose `retry_after_s` is when the next
token arrives. The API applies it right after authentication, before anything else — in
particular before the idempotency layer, so a flood of retries cannot hold keys.

Buckets live in this process: N replicas allow N times the rate. That is the usual trade of
an in-process limiter; a shared one (Redis, the database) would cost a round trip a request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from controlplane.domain.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """`take(key)` or raise RateLimited. `rate_per_s` <= 0 disables limiting. At most
    `max_keys` buckets are kept (least recently used go first: a full bucket is the state
    of any key not seen lately, so forgetting one loses nothing)."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(burst, 1.0)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> None:
        """Take one token from `key`'s bucket. Raises RateLimited when it is empty."""
        if self.rate_per_s <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(
                self.burst, bucket.tokens + (now - bucket.updated) * self.rate_per_s
            )
            bucket.updated = now
        if bucket.tokens < 1.0:
            wait_s = (1.0 - bucket.tokens) / self.rate_per_s
            raise RateLimited(
                f"rate limit of {self.rate_per_s:g} requests/s exceeded; retry in {wait_s:.2f}s",
                retry_after_s=wait_s,
            )
        bucket.tokens -= 1.0

"""bench-outbox's instruments: wall time per relay phase, and the optional profilers."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from controlplane.messaging.relay import Relay


class PhaseTimer:
    """Wraps a relay's claim / pending / publish / finish to add up their wall time."""

    def __init__(self, relay: Relay) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.sizes: list[int] = []
        self.errors: list[str] = []
        store = relay.store
        store.claim_pending = self._wrap("claim", store.claim_pending)  # type: ignore[method-assign,assignment]
        store.finish = self._wrap("finish", store.finish)  # type: ignore[method-assign,assignment]
        relay._publish_all = self._wrap("publish", relay._publish_all)  # type: ignore[method-assign,assignment]

    def _wrap(self, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                self.errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
                raise
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
                self.calls[name] = self.calls.get(name, 0) + 1
            if name == "claim":
                self.sizes.append(len(result[1]))
            return result

        return timed

    def summary(self) -> dict[str, Any]:
        return {
            "cycles": len(self.sizes),
            "events_per_cycle": round(statistics.fmean(self.sizes), 1) if self.sizes else 0,
            "phase_s": {k: round(v, 3) for k, v in self.seconds.items()},
            "cycle_errors": len(self.errors),
            "first_error": self.errors[0] if self.errors else None,
        }


def start_profiler(kind: str | None) -> Any:
    if kind == "cprofile":
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        return profiler
    if kind == "pyinstrument":
        from pyinstrument import Profiler  # uv run --with pyinstrument

        profiler = Profiler(async_mode="disabled", interval=0.0005)
        profiler.start()
        return profiler
    return None


def stop_profiler(profiler: Any, kind: str | None, out: str | None) -> None:
    if profiler is None:
        return
    if kind == "cprofile":
        import pstats

        profiler.disable()
        if out:
            profiler.dump_stats(out)
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(35)
        stats.sort_stats("cumulative").print_stats(45)
    else:
        profiler.stop()
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        if out:
            Path(out).write_text(text)
        print(text, file=sys.stderr)

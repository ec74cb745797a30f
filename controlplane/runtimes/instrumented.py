"""`InstrumentedRuntime`: any Runtime, with a metric and a span around each operation.

A decorator in the sense of the pattern: it implements the Runtime port by delegating to the
wrapped backend, so no backend carries observability code. Operations measured: create,
start, stop, remove, probe, status (ADR 0005); `logs` and `list_sandboxes` pass through.
The backend's optional capabilities (exec, node capacity, watches) are offered as they are,
through `capabilities` (see capabilities.py), not measured.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from opentelemetry.trace import SpanKind

from controlplane.observability import metrics, tracing
from controlplane.runtimes.base import ProbeSpec, Runtime, SandboxSpec, SandboxStatus
from controlplane.runtimes.capabilities import Capabilities, capabilities

T = TypeVar("T")


class InstrumentedRuntime:
    """Wraps `inner`: counts `agentos_runtime_operations_total{runtime,operation,result}`,
    times `agentos_runtime_operation_duration_seconds{runtime,operation}` and opens a
    `runtime.<operation>` client span. Exceptions pass through unchanged (result=error)."""

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self.name = inner.name
        self._capabilities = capabilities(inner)

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped backend's optional capabilities."""
        return self._capabilities

    async def _measure(
        self, operation: str, sandbox_id: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        started = time.perf_counter()
        result = "error"
        with tracing.tracer().start_as_current_span(
            f"runtime.{operation}",
            kind=SpanKind.CLIENT,
            attributes={"agentos.runtime": self.name, "agentos.sandbox_id": sandbox_id},
        ):
            try:
                value = await call()
                result = "ok"
                return value
            finally:
                metrics.RUNTIME_OPERATIONS.labels(self.name, operation, result).inc()
                metrics.RUNTIME_OPERATION_DURATION.labels(self.name, operation).observe(
                    time.perf_counter() - started
                )

    async def create(self, spec: SandboxSpec) -> SandboxStatus:
        return await self._measure("create", spec.sandbox_id, lambda: self.inner.create(spec))

    async def start(self, sandbox_id: str) -> SandboxStatus:
        return await self._measure("start", sandbox_id, lambda: self.inner.start(sandbox_id))

    async def status(self, sandbox_id: str) -> SandboxStatus:
        return await self._measure("status", sandbox_id, lambda: self.inner.status(sandbox_id))

    async def probe(self, sandbox_id: str, probe: ProbeSpec) -> bool:
        return await self._measure("probe", sandbox_id, lambda: self.inner.probe(sandbox_id, probe))

    async def stop(self, sandbox_id: str, timeout_s: float = 10.0) -> None:
        await self._measure("stop", sandbox_id, lambda: self.inner.stop(sandbox_id, timeout_s))

    async def remove(self, sandbox_id: str) -> None:
        await self._measure("remove", sandbox_id, lambda: self.inner.remove(sandbox_id))

    async def logs(self, sandbox_id: str, tail_lines: int = 100) -> str:
        return await self.inner.logs(sandbox_id, tail_lines)

    async def list_sandboxes(self) -> dict[str, str]:
        return await self.inner.list_sandboxes()

    async def close(self) -> None:
        await self.inner.close()


def instrument(runtimes: dict[str, Runtime]) -> dict[str, Runtime]:
    """`runtimes` (runtime class → backend) with each distinct backend wrapped once, so a
    backend serving several classes stays one object (see Controller.distinct_runtimes)."""
    wrapped: dict[int, Runtime] = {}
    for backend in runtimes.values():
        if id(backend) not in wrapped:
            wrapped[id(backend)] = InstrumentedRuntime(backend)
    return {cls: wrapped[id(backend)] for cls, backend in runtimes.items()}

"""UnitOfWork: the boundary of consistency (Architecture Patterns with Python, ch. 6).

Business rows, their outbox events and audit entries are written on one connection in one
transaction; `commit()` is the only way a change leaves the process. On PostgreSQL a commit
that wrote events also NOTIFYs the relay (delivered by PostgreSQL only at commit).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.data.outbox.writer import OUTBOX_CHANNEL, OutboxWriter
from controlplane.data.repositories.agents import AgentRepository
from controlplane.data.repositories.approvals import ApprovalRepository
from controlplane.data.repositories.audit import AuditRepository
from controlplane.data.repositories.credentials import AgentCredentialRepository
from controlplane.data.repositories.events import EventRepository
from controlplane.data.repositories.idempotency import IdempotencyRepository
from controlplane.data.repositories.model_providers import ModelProviderRepository
from controlplane.data.repositories.run_deliveries import RunDeliveryRepository
from controlplane.data.repositories.run_notifications import RunNotificationRepository
from controlplane.data.repositories.runs import RunRepository
from controlplane.data.repositories.tenants import TenantRepository
from controlplane.data.repositories.tokens import TokenRepository
from controlplane.domain.events.registry import SchemaRegistry
from controlplane.observability import tracing


class UnitOfWork:
    """`async with UnitOfWork(engine, registry) as uow: ...; await uow.commit()`.

    Leaving the block without `commit()` (or with an exception) rolls everything back.
    """

    tenants: TenantRepository
    agents: AgentRepository
    outbox: OutboxWriter
    audit: AuditRepository
    events: EventRepository
    runs: RunRepository
    credentials: AgentCredentialRepository
    deliveries: RunDeliveryRepository
    tokens: TokenRepository
    idempotency: IdempotencyRepository
    notifications: RunNotificationRepository
    models: ModelProviderRepository
    approvals: ApprovalRepository
    connection: AsyncConnection

    def __init__(
        self, engine: AsyncEngine, registry: SchemaRegistry, *, principal: str = "system"
    ) -> None:
        self._engine = engine
        self._registry = registry
        self.principal = principal
        self._committed = False
        self._after_commit: list[Callable[[], None]] = []

    async def __aenter__(self) -> UnitOfWork:
        self.connection = await self._engine.connect()
        await self.connection.begin()
        self.tenants = TenantRepository(self.connection)
        self.agents = AgentRepository(self.connection)
        self.outbox = OutboxWriter(self.connection, self._registry)
        self.audit = AuditRepository(self.connection, self.principal)
        self.events = EventRepository(self.connection)
        self.runs = RunRepository(self.connection)
        self.credentials = AgentCredentialRepository(self.connection)
        self.deliveries = RunDeliveryRepository(self.connection)
        # A span per unit: the service's span and the outbox rows' traceparent sit below it.
        self._span = tracing.tracer().start_as_current_span(
            "uow", attributes={"principal": self.principal}
        )
        self._span.__enter__()
        self.tokens = TokenRepository(self.connection)
        self.idempotency = IdempotencyRepository(self.connection)
        self.notifications = RunNotificationRepository(self.connection)
        self.models = ModelProviderRepository(self.connection)
        self.approvals = ApprovalRepository(self.connection)
        return self

    async def commit(self) -> None:
        """Commit the transaction; wake the relay if events were written (on PostgreSQL the
        outbox's write queued the NOTIFY already)."""
        if (
            self.outbox.written
            and not self.outbox.notified
            and self.connection.dialect.name == "postgresql"
        ):
            await self.connection.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))
        await self.connection.commit()
        self._committed = True
        hooks, self._after_commit = self._after_commit, []
        for hook in hooks:
            hook()

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Call `hook` once this unit has committed (never if it rolls back): metrics and
        spans of what the unit wrote, so they count only what happened."""
        self._after_commit.append(hook)

    async def rollback(self) -> None:
        """Discard everything written in this unit."""
        await self.connection.rollback()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._committed:
                await self.connection.rollback()
        finally:
            self.idempotency.release()
            await self.connection.close()
            self._span.__exit__(exc_type, exc, tb)

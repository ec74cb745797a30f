"""An in-memory UnitOfWork for service-layer tests (Architecture Patterns with Python, ch. 6:
`FakeUnitOfWork` and fake repositories).

The service layer takes the concrete `controlplane.data.unit_of_work.UnitOfWork`, so each fake
subclasses the class it stands in for: mypy then holds every overriding method to the real
signature, and a method the fake does not define fails loudly (there is no connection
behind it) instead of passing silently.

What is kept of the real behaviour: a UnitOfWork works on its own copy of the committed state
and `commit()` is the only way changes reach it (leaving the block without it discards them);
names are unique per tenant (AlreadyExists); writes check `resource_version` (Conflict);
events are validated against the SchemaRegistry before they are written and get gapless
sequences per aggregate; the audit trail records the principal.
"""

from __future__ import annotations

import builtins
import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any

from controlplane.data.outbox.writer import OutboxWriter
from controlplane.data.repositories.agents import AgentRepository, Reservation
from controlplane.data.repositories.audit import AuditEntry, AuditRepository
from controlplane.data.repositories.credentials import AgentCredential, AgentCredentialRepository
from controlplane.data.repositories.idempotency import IdempotencyRepository, StoredResponse
from controlplane.data.repositories.tenants import TenantRepository
from controlplane.data.repositories.tokens import TokenRepository
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.lifecycle import Phase
from controlplane.domain.agents.model import AgentSpec, AgentStatus
from controlplane.domain.errors import (
    AgentNotFound,
    AlreadyExists,
    Conflict,
    TenantNotEmpty,
    TenantNotFound,
)
from controlplane.domain.events.envelope import EventEnvelope, NewEvent, utcnow
from controlplane.domain.events.registry import SchemaRegistry, load_builtin_schemas
from controlplane.domain.records import AgentRecord, TenantRecord, TokenRecord
from controlplane.domain.selectors import Requirement, matches

Transition = tuple[str, str | None, str, str, str, str | None]  # agent id, from, to, why, msg, ev


@dataclass(frozen=True)
class AuditRow:
    """An audit entry as stored: the entry and who made it."""

    principal: str
    entry: AuditEntry


@dataclass
class Tables:
    """Everything a fake UnitOfWork reads and writes; one copy is committed, each open unit
    works on another."""

    tenants: dict[str, TenantRecord] = field(default_factory=dict)
    agents: dict[str, AgentRecord] = field(default_factory=dict)  # by id
    transitions: list[Transition] = field(default_factory=list)
    events: list[EventEnvelope] = field(default_factory=list)
    sequences: dict[tuple[str, str], int] = field(default_factory=dict)
    audit: list[AuditRow] = field(default_factory=list)
    tokens: dict[str, TokenRecord] = field(default_factory=dict)
    credentials: dict[str, AgentCredential] = field(default_factory=dict)  # by id
    idempotency: dict[tuple[str, str, str], tuple[StoredResponse, datetime]] = field(
        default_factory=dict
    )


class FakeDatabase:
    """The committed state, shared by the fake UnitOfWorks made from it."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry or load_builtin_schemas()
        self.committed = Tables()
        self.commits = 0

    def uow(self, principal: str = "test") -> FakeUnitOfWork:
        return FakeUnitOfWork(self, principal=principal)

    def agent(self, tenant: str, name: str) -> AgentRecord | None:
        """The committed agent `name` of `tenant`, or None."""
        found = [a for a in self.committed.agents.values() if (a.tenant, a.name) == (tenant, name)]
        return found[0] if found else None

    def event_types(self) -> list[str]:
        return [e.event_type for e in self.committed.events]

    def audit_actions(self) -> list[str]:
        return [row.entry.action for row in self.committed.audit]


class FakeTenantRepository(TenantRepository):
    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def add(self, name: str, quota: Mapping[str, int]) -> TenantRecord:
        if name in self._t.tenants:
            raise AlreadyExists(f"tenant {name!r} already exists")
        record = TenantRecord(name, dict(quota), 1, utcnow())
        self._t.tenants[name] = record
        return record

    async def ensure(self, name: str) -> bool:
        if name in self._t.tenants:
            return False
        self._t.tenants[name] = TenantRecord(name, {}, 1, utcnow())
        return True

    async def find(self, name: str) -> TenantRecord | None:
        return self._t.tenants.get(name)

    async def get(self, name: str) -> TenantRecord:
        found = await self.find(name)
        if found is None:
            raise TenantNotFound(f"tenant {name!r} not found")
        return found

    async def set_quota(
        self, name: str, quota: Mapping[str, int], *, expected_version: int | None = None
    ) -> TenantRecord:
        current = await self.get(name)
        if expected_version is not None and expected_version != current.resource_version:
            raise Conflict(f"tenant {name!r} is not at resourceVersion {expected_version}")
        updated = replace(current, quota=dict(quota), resource_version=current.resource_version + 1)
        self._t.tenants[name] = updated
        return updated

    async def list(self, *, after: str | None, limit: int) -> builtins.list[TenantRecord]:
        names = sorted(n for n in self._t.tenants if after is None or n > after)
        return [self._t.tenants[n] for n in names[:limit]]

    async def remove(self, name: str) -> None:
        if any(a.tenant == name for a in self._t.agents.values()):
            raise TenantNotEmpty(f"tenant {name!r} still has agents")
        self._t.tenants.pop(name, None)


class FakeAgentRepository(AgentRepository):
    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def _of(self, tenant: str | None) -> builtins.list[AgentRecord]:
        return sorted(
            (a for a in self._t.agents.values() if tenant is None or a.tenant == tenant),
            key=lambda a: (a.tenant, a.name),
        )

    async def find(self, tenant: str, name: str) -> AgentRecord | None:
        return next((a for a in self._of(tenant) if a.name == name), None)

    async def find_many(self, tenant: str, names: Iterable[str]) -> dict[str, AgentRecord]:
        wanted = set(names)
        return {a.name: a for a in self._of(tenant) if a.name in wanted}

    async def get(self, tenant: str, name: str) -> AgentRecord:
        found = await self.find(tenant, name)
        if found is None:
            raise AgentNotFound(f"agent {name!r} not found in tenant {tenant!r}")
        return found

    async def by_id(self, agent_id: str, *, for_update: bool = False) -> AgentRecord | None:
        return self._t.agents.get(agent_id)

    async def by_ids(self, agent_ids: Iterable[str]) -> dict[str, AgentRecord]:
        return {i: self._t.agents[i] for i in agent_ids if i in self._t.agents}

    async def list(self, tenant: str | None = None) -> builtins.list[AgentRecord]:
        return self._of(tenant)

    async def page(
        self,
        tenant: str,
        *,
        after: str | None,
        limit: int,
        requirements: Sequence[Requirement] = (),
    ) -> builtins.list[AgentRecord]:
        found = [
            a
            for a in self._of(tenant)
            if (after is None or a.name > after) and matches(requirements, a.labels)
        ]
        return found[:limit]

    async def pending(self) -> Sequence[AgentRecord]:
        return [
            a
            for a in self._of(None)
            if a.phase is Phase.CREATED and a.deletion_requested_at is None
        ]

    async def reservations(self, phases: Iterable[Phase]) -> Sequence[Reservation]:
        raise NotImplementedError("not needed by the service layer")

    async def add_many(self, records: Sequence[AgentRecord]) -> None:
        taken = {(a.tenant, a.name) for a in self._t.agents.values()}
        keys = [(r.tenant, r.name) for r in records]
        if taken & set(keys) or len(set(keys)) != len(keys):
            raise AlreadyExists(f"an agent among {[r.name for r in records]} already exists")
        for record in records:
            self._t.agents[record.id] = record

    async def save(
        self,
        record: AgentRecord,
        *,
        spec: AgentSpec | None = None,
        status: AgentStatus | None = None,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        bump_generation: bool = False,
        deletion_requested: bool = False,
    ) -> AgentRecord:
        self._check_current(record)
        fresh = replace(
            record,
            spec=spec if spec is not None else record.spec,
            status=status if status is not None else record.status,
            labels=labels if labels is not None else record.labels,
            annotations=annotations if annotations is not None else record.annotations,
            generation=record.generation + 1 if bump_generation else record.generation,
            resource_version=record.resource_version + 1,
            deletion_requested_at=(
                record.deletion_requested_at or utcnow()
                if deletion_requested
                else record.deletion_requested_at
            ),
        )
        self._t.agents[record.id] = fresh
        return fresh

    async def save_statuses(
        self, changes: Sequence[tuple[AgentRecord, AgentStatus]]
    ) -> Sequence[AgentRecord | Conflict]:
        results: list[AgentRecord | Conflict] = []
        for record, status in changes:
            try:
                results.append(await self.save(record, status=status))
            except Conflict as stale:
                results.append(stale)
        return results

    def _check_current(self, record: AgentRecord) -> None:
        stored = self._t.agents.get(record.id)
        if stored is None or stored.resource_version != record.resource_version:
            raise Conflict(
                f"agent {record.name!r} was modified concurrently "
                f"(resourceVersion {record.resource_version} is stale)"
            )

    async def remove(self, record: AgentRecord) -> None:
        self._t.agents.pop(record.id, None)

    async def add_transitions(
        self,
        transitions: Sequence[tuple[AgentRecord, str | None, str, str, str, str | None]],
    ) -> None:
        for record, from_phase, to_phase, reason, message, event_id in transitions:
            self._t.transitions.append((record.id, from_phase, to_phase, reason, message, event_id))

    async def transitions(self, agent_id: str) -> Sequence[dict[str, Any]]:
        keys = ("agent_id", "from_phase", "to_phase", "reason", "message", "event_id")
        return [dict(zip(keys, t, strict=True)) for t in self._t.transitions if t[0] == agent_id]


class FakeOutboxWriter(OutboxWriter):
    def __init__(self, tables: Tables, registry: SchemaRegistry) -> None:
        self._t = tables
        self._registry = registry
        self.written = 0

    async def add_many(
        self, events: list[NewEvent], *, traceparent: str | None = None
    ) -> list[EventEnvelope]:
        for event in events:  # all are checked before any is written, as the real writer
            self._registry.validate(event.event_type, event.schema_version, event.payload)
        envelopes = []
        for event in events:
            key = (event.aggregate_type, event.aggregate_id)
            self._t.sequences[key] = self._t.sequences.get(key, 0) + 1
            envelopes.append(event.written(self._t.sequences[key]))
        self._t.events.extend(envelopes)
        self.written += len(envelopes)
        return envelopes


class FakeAuditRepository(AuditRepository):
    def __init__(self, tables: Tables, principal: str) -> None:
        self._t = tables
        self._principal = principal

    async def record_many(self, entries: list[AuditEntry]) -> None:
        self._t.audit.extend(AuditRow(self._principal, e) for e in entries)


class FakeTokenRepository(TokenRepository):
    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def add(self, record: TokenRecord, token_hash: str) -> None:
        self._t.tokens[record.id] = record

    async def find(self, token_id: str) -> TokenRecord | None:
        return self._t.tokens.get(token_id)

    async def list(
        self, tenant: str | None, *, platform_admins: bool = False
    ) -> builtins.list[TokenRecord]:
        return sorted(
            (
                t
                for t in self._t.tokens.values()
                if (t.platform_admin if platform_admins else t.tenant == tenant)
            ),
            key=lambda t: (t.created_at, t.id),
        )

    async def revoke(self, token_id: str, now: datetime) -> bool:
        token = self._t.tokens.get(token_id)
        if token is None or token.revoked_at is not None:
            return False
        self._t.tokens[token_id] = replace(token, revoked_at=now)
        return True


class FakeCredentialRepository(AgentCredentialRepository):
    def __init__(self, tables: Tables) -> None:
        self._t = tables

    async def add(self, credential: AgentCredential, token_hash: str) -> None:
        self._t.credentials[credential.id] = credential

    async def revoke_agent(self, agent_id: str, *, except_sandbox: str | None = None) -> int:
        revoked = 0
        for key, c in list(self._t.credentials.items()):
            if c.agent_id == agent_id and c.revoked_at is None and c.sandbox_id != except_sandbox:
                self._t.credentials[key] = replace(c, revoked_at=utcnow())
                revoked += 1
        return revoked

    async def revoke_sandbox(self, sandbox_id: str) -> int:
        revoked = 0
        for key, c in list(self._t.credentials.items()):
            if c.sandbox_id == sandbox_id and c.revoked_at is None:
                self._t.credentials[key] = replace(c, revoked_at=utcnow())
                revoked += 1
        return revoked


class FakeIdempotencyRepository(IdempotencyRepository):
    """Keys are held by the open unit only (one process, like the SQLite path)."""

    def __init__(self, tables: Tables, held: set[tuple[str, str, str]]) -> None:
        self._t = tables
        self._held_keys = held
        self._mine_keys: list[tuple[str, str, str]] = []

    async def hold(self, tenant: str, principal: str, key: str) -> bool:
        scope = (tenant, principal, key)
        if scope in self._held_keys:
            return False
        self._held_keys.add(scope)
        self._mine_keys.append(scope)
        return True

    def release(self) -> None:
        for scope in self._mine_keys:
            self._held_keys.discard(scope)
        self._mine_keys.clear()

    async def find(
        self, tenant: str, principal: str, key: str, now: datetime
    ) -> StoredResponse | None:
        stored = self._t.idempotency.get((tenant, principal, key))
        return stored[0] if stored is not None and stored[1] > now else None

    async def save(
        self,
        tenant: str,
        principal: str,
        key: str,
        response: StoredResponse,
        now: datetime,
        expires_at: datetime,
    ) -> None:
        self._t.idempotency[(tenant, principal, key)] = (response, expires_at)


_HELD: set[tuple[str, str, str]] = set()


class FakeUnitOfWork(UnitOfWork):
    """`async with database.uow() as uow: ...; await uow.commit()`, with no database."""

    def __init__(self, database: FakeDatabase, *, principal: str = "test") -> None:
        self.database = database
        self.principal = principal
        self._committed = False
        self._bind(copy.deepcopy(database.committed))

    def _bind(self, tables: Tables) -> None:
        self.tables = tables
        self.tenants = FakeTenantRepository(tables)
        self.agents = FakeAgentRepository(tables)
        self.outbox = FakeOutboxWriter(tables, self.database.registry)
        self.audit = FakeAuditRepository(tables, self.principal)
        self.tokens = FakeTokenRepository(tables)
        self.credentials = FakeCredentialRepository(tables)
        self.idempotency = FakeIdempotencyRepository(tables, _HELD)

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def commit(self) -> None:
        self.database.committed = copy.deepcopy(self.tables)
        self.database.commits += 1
        self._committed = True

    async def rollback(self) -> None:
        self.idempotency.release()
        self._bind(copy.deepcopy(self.database.committed))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.idempotency.release()

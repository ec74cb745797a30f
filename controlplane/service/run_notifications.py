"""Delivering run notifications (webhooks) once each run has ended (architecture/runs.md,
Notify; the signature and the address rule: `domain.runs.notify`).

One pass (`deliver_due`) claims the due notifications of ended runs whose terminal event the
relay has published, and attempts each: the body is built from the run and that event, the
host is resolved and every address checked against the egress rule, the request goes to the
checked address (so DNS cannot change between the check and the call), signed. A 2xx marks
it delivered for good; anything else is retried 1 s doubling to 300 s, `MAX_ATTEMPTS` times;
a refused address is given up at once. At least once: a notifier killed between the
receiver's 2xx and its commit sends it again, with the same `X-AgentOS-Delivery`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog

from controlplane.data.repositories.run_notifications import DueNotification
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import FieldError, ValidationFailed
from controlplane.domain.events.envelope import rfc3339, utcnow
from controlplane.domain.runs import notify
from controlplane.domain.runs.lifecycle import a2a_state
from controlplane.domain.runs.model import RunRecord
from controlplane.service.listing import UnitOfWorkFactory

log = structlog.get_logger("agentos.notifier")

# (url, headers, body, extensions) → HTTP status; raises OSError / any transport error.
Post = Callable[[str, dict[str, str], bytes, dict[str, Any]], Awaitable[int]]
Resolve = Callable[[str, int], Awaitable[list[str]]]


class Refused(Exception):
    """The target may not be called (the egress rule); never retried."""


@dataclass(frozen=True)
class NotifierConfig:
    """`resolve_overrides`: AGENTOS_EGRESS_RESOLVE as a mapping (trusted as given);
    `lease_s` bounds one attempt; `batch` notifications per pass."""

    resolve_overrides: Mapping[str, str] = field(default_factory=dict)
    lease_s: float = 30.0
    batch: int = 16


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses of `host` (getaddrinfo, TCP)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, proto=6)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_address(
    host: str, port: int, overrides: Mapping[str, str], resolve: Resolve
) -> str:
    """The address to call for `host`: its override, or the first of its resolved addresses
    when every one is global. Raises Refused."""
    name = host.lower().rstrip(".")
    if name in overrides:
        return overrides[name]
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = await resolve(host, port)
        except OSError as exc:
            raise OSError(f"cannot resolve {host!r}: {exc}") from exc
    for address in addresses:
        problem = notify.address_problem(address)
        if problem:
            raise Refused(f"{host}: {problem}")
    if not addresses:
        raise OSError(f"{host!r} has no address")
    return addresses[0]


def _pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """`url` with its host replaced by `address`, the Host header and TLS server name of the
    original host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = f"{host}:{parts.port}" if parts.port else host
    return (
        urlunsplit(parts._replace(netloc=netloc)),
        {"Host": host_header},
        {"sni_hostname": host},
    )


def body_of(due: DueNotification, run: RunRecord, event_type: str, event_id: str) -> bytes:
    """What is POSTed: `{"type", "id", "occurredAt", "run"}` (format `run`), or for an A2A
    push notification a StreamResponse `{"statusUpdate": ...}` (format `a2a`)."""
    obj = run.to_object()
    payload: dict[str, Any]
    if due.format == "a2a":
        state = a2a_state(run.phase, run.status.reason).value.upper().replace("-", "_")
        payload = {
            "statusUpdate": {
                "taskId": run.name,
                "contextId": run.labels.get("a2a.agentos.io/context-id", run.id),
                "status": {"state": f"TASK_STATE_{state}", "timestamp": run.status.finishedAt},
                "metadata": {"agentos.io/run": obj},
            }
        }
    else:
        payload = {
            "type": event_type,
            "id": event_id,
            "occurredAt": run.status.finishedAt or rfc3339(utcnow()),
            "run": obj,
        }
    return json.dumps(payload, separators=(",", ":")).encode()


def headers_of(due: DueNotification, event_type: str, event_id: str, body: bytes) -> dict[str, str]:
    """Content type, the delivery id (the terminal event's id), the event type, the
    signature when the target has a secret, the A2A token when it has one."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "agentos-notifier",
        notify.DELIVERY_HEADER: event_id,
        notify.EVENT_HEADER: event_type,
    }
    if due.secret:
        headers[notify.SIGNATURE_HEADER] = notify.signature(due.secret, int(time.time()), body)
    if due.token:
        headers[notify.A2A_TOKEN_HEADER] = due.token
    return headers


async def _attempt(
    uow_factory: UnitOfWorkFactory,
    due: DueNotification,
    post: Post,
    resolve: Resolve,
    cfg: NotifierConfig,
) -> bool:
    """One attempt at `due`; its outcome recorded. True when delivered."""
    async with uow_factory() as uow:
        run = await uow.runs.by_id(due.run_id)
        event = await uow.notifications.terminal_event(due.run_id)
    if run is None or event is None:
        return False
    body = body_of(due, run, event.event_type, event.event_id)
    headers = headers_of(due, event.event_type, event.event_id, body)
    parts = urlsplit(due.url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    error = ""
    try:
        address = await checked_address(parts.hostname or "", port, cfg.resolve_overrides, resolve)
        url, host, extensions = _pinned(due.url, address)
        status = await post(url, {**headers, **host}, body, extensions)
        if 200 <= status < 300:
            async with uow_factory() as uow:
                await uow.notifications.delivered(due.run_id)
                await uow.commit()
            log.info("notified", run=run.name, tenant=run.tenant, attempt=due.attempt)
            return True
        error = f"HTTP {status}"
    except Refused as exc:
        async with uow_factory() as uow:
            await uow.notifications.give_up(due.run_id, str(exc))
            await uow.commit()
        log.warning("notification refused", run=run.name, tenant=run.tenant, reason=str(exc))
        return False
    except Exception as exc:  # any transport failure is retried
        error = f"{type(exc).__name__}: {exc}"
    await _failed(uow_factory, due, error)
    log.info("notification failed", run=run.name, attempt=due.attempt, error=error)
    return False


async def _failed(uow_factory: UnitOfWorkFactory, due: DueNotification, error: str) -> None:
    async with uow_factory() as uow:
        if due.attempt >= notify.MAX_ATTEMPTS:
            await uow.notifications.give_up(due.run_id, f"{due.attempt} attempts: {error}")
        else:
            wait = timedelta(seconds=notify.retry_after_s(due.attempt))
            await uow.notifications.retry(due.run_id, utcnow() + wait, error)
        await uow.commit()


async def deliver_due(
    uow_factory: UnitOfWorkFactory,
    post: Post,
    *,
    resolve: Resolve = system_resolve,
    config: NotifierConfig | None = None,
) -> int:
    """One pass: claim up to `config.batch` due notifications and attempt them at once.
    Returns how many were claimed (0: nothing was due)."""
    cfg = config or NotifierConfig()
    async with uow_factory() as uow:
        claimed = await uow.notifications.claim(utcnow(), cfg.lease_s, cfg.batch)
        await uow.commit()
    await asyncio.gather(*(_attempt(uow_factory, d, post, resolve, cfg) for d in claimed))
    return len(claimed)


async def set_notification(
    uow: UnitOfWork,
    tenant: str,
    run_name: str,
    url: str,
    *,
    agent: str | None = None,
    secret: str | None = None,
    format: str = "run",
    token: str | None = None,
) -> RunRecord:
    """Give run `run_name` a notification target (A2A's push notification config), in place
    of any it had; one already delivered stays delivered. Commits. Raises RunNotFound,
    ValidationFailed (`url` is not an http(s) URL of a global address, pointer `/url`)."""
    problem = notify.url_problem(url)
    if problem:
        raise ValidationFailed(f"url: {problem}", errors=[FieldError("/url", problem)])
    record = await uow.runs.get(tenant, run_name, agent=agent)
    await uow.notifications.add(record.id, tenant, url, secret, format=format, token=token)
    await uow.commit()
    return record

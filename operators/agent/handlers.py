"""The kopf handlers: thin translations of Agent resource changes into service calls.

- created, changed or found at start (resume) → `service.agents.apply_from_kubernetes`,
  keyed by the resource's uid and generation, so a repeat is a no-op;
- deleted → `service.agents.delete_agent` (the agent goes to Terminating; the controller
  removes the sandbox, then the record); the handler waits for the record to go (the status
  mirror sees `agent.deleted` in the outbox), retrying if that takes long, and only then
  does kopf remove the finalizer `agentos.io/finalizer`.

A manifest the control plane refuses (the CRD schema admits it but a rule the schema cannot
express does not) is a permanent error: recorded on `.status` as `Accepted=False` with the
reason, not retried. A name still held by an earlier resource being deleted is temporary.
The lifecycle itself lives in the control plane; nothing here decides a phase.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from controlplane.bootstrap import Container
from controlplane.domain.errors import AlreadyExists, BadRequest, Conflict, ValidationFailed
from controlplane.domain.events.envelope import rfc3339, utcnow
from controlplane.observability import metrics as obs
from controlplane.service import agents as svc
from operators.agent.mirror import StatusMirror, manifest_from_resource

FINALIZER = "agentos.io/finalizer"
PRINCIPAL = "system:operator"
DELETE_WAIT_S = 20.0
# kopf runs a worker per resource, so a thousand new Agents are a thousand handlers at once;
# this many reach the database together (the rest wait their turn, not for a connection).
DATABASE_CONCURRENCY = 12


def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf's settings for Agent OS's operator (registered as a startup handler)."""
    settings.persistence.finalizer = FINALIZER
    # kopf's own Events only for problems; transitions are posted by the mirror.
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True  # one active operator: our Lease, not peering
    # No scanning of namespaces and CRDs: the Agent CRD is installed before the operator
    # runs, and its ServiceAccount needs no right to list namespaces or CRDs.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    # An apiserver under load answers 429: keep retrying for about two minutes (kopf
    # gives up after its backoffs and leaves the object until its next event).
    settings.networking.error_backoffs = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55]


def refuse(patch: kopf.Patch, exc: Exception, generation: int) -> None:
    """Mark a resource the control plane refused: phase Failed, reason Refused, and an
    `Accepted=False` condition naming the error (Kubernetes condition conventions)."""
    patch.status["phase"] = "Failed"
    patch.status["reason"] = "Refused"
    patch.status["message"] = str(exc)
    patch.status["conditions"] = [
        {
            "type": "Accepted",
            "status": "False",
            "reason": type(exc).__name__,
            "message": str(exc),
            "lastTransitionTime": rfc3339(utcnow()),
            "observedGeneration": generation,
        }
    ]


def build_registry(container: Container, mirror: StatusMirror) -> kopf.OperatorRegistry:
    """A registry with the Agent handlers bound to `container` (database) and `mirror`."""
    registry = kopf.OperatorRegistry()
    database = asyncio.Semaphore(DATABASE_CONCURRENCY)
    resource = ("agentos.io", "v1alpha1", "agents")

    kopf.on.startup(registry=registry)(configure)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.resume(*resource, registry=registry)
    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, registry=registry)
    async def apply(
        body: kopf.Body,
        uid: str,
        namespace: str | None,
        meta: kopf.Meta,
        patch: kopf.Patch,
        **_: Any,
    ) -> None:
        assert namespace is not None  # Agents are namespaced
        generation = int(meta.get("generation") or 1)
        manifest = manifest_from_resource(dict(body))
        try:
            async with database, container.uow(PRINCIPAL) as uow:
                result = await svc.apply_from_kubernetes(
                    uow, namespace, manifest, uid=uid, generation=generation
                )
        except (ValidationFailed, BadRequest, AlreadyExists) as exc:
            obs.OPERATOR_APPLIES.labels("refused").inc()
            refuse(patch, exc, generation)
            raise kopf.PermanentError(str(exc)) from exc
        except Conflict as exc:
            obs.OPERATOR_APPLIES.labels("retry").inc()
            raise kopf.TemporaryError(str(exc), delay=2) from exc
        obs.OPERATOR_APPLIES.labels("changed" if result.changed else "unchanged").inc()
        mirror.mark([result.agent.id])

    @kopf.on.delete(*resource, registry=registry)
    async def delete(uid: str, namespace: str | None, name: str, **_: Any) -> None:
        assert namespace is not None
        async with database, container.uow(PRINCIPAL) as uow:
            record = await uow.agents.find(namespace, name)
            if record is None or record.annotations.get(svc.KUBERNETES_UID) != uid:
                return  # gone (or never ours): the finalizer may go
            deleted = mirror.expect_deletion(record.id)
            if record.deletion_requested_at is None:
                await svc.delete_agent(uow, namespace, name)
        try:
            # The mirror reads `agent.deleted` from the outbox once the controller removed
            # the sandbox and the record; waiting here costs no request, unlike a retry.
            await asyncio.wait_for(deleted.wait(), DELETE_WAIT_S)
        except TimeoutError:
            async with database, container.uow(PRINCIPAL) as uow:
                if await uow.agents.find(namespace, name) is None:
                    return
            raise kopf.TemporaryError("waiting for the sandbox to be removed", delay=1) from None
        finally:
            mirror.forget_deletion(record.id)

    return registry

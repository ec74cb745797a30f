"""From an agent to what its runtime needs: the sandbox's name, spec, readiness probe, and
the runtime that serves its runtime class."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlsplit, urlunsplit

from controlplane.domain.agents.model import AgentSpec
from controlplane.domain.quantity import cpu_millis, memory_bytes
from controlplane.domain.records import AgentRecord
from controlplane.runtimes.base import ProbeSpec, Runtime, SandboxError, SandboxSpec


def sandbox_hash(spec: AgentSpec) -> str:
    """A short digest (16 hex digits) of the sandbox-shaping part of the spec: a change of
    it needs a new sandbox, any other change does not."""
    raw = json.dumps(spec.sandbox_fingerprint(), sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def proxy_env(proxy_url: str, token: str, gateway_url: str | None) -> dict[str, str]:
    """The sandbox's proxy variables: `HTTP_PROXY`, `HTTPS_PROXY` (and lower-case) =
    `proxy_url` with `agent:<token>` as its user information (the proxy's Basic credential),
    `NO_PROXY`/`no_proxy` = the gateway's host (the SDK reaches the gateway directly)."""
    url = urlsplit(proxy_url)
    authority = f"agent:{token}@{url.netloc.rpartition('@')[2]}"
    with_credential = urlunsplit((url.scheme, authority, url.path, "", ""))
    env = {name: with_credential for name in ("HTTP_PROXY", "HTTPS_PROXY")}
    env |= {name.lower(): value for name, value in env.items()}
    gateway_host = urlsplit(gateway_url).hostname if gateway_url else None
    if gateway_host:
        env["NO_PROXY"] = env["no_proxy"] = gateway_host
    return env


def sandbox_name(record: AgentRecord) -> str:
    """`{tenant}-{name}-{id[:8]}-{generation}-{restartCount}`.

    Unique per agent, generation and restart: a replacement never reuses the name of a
    sandbox that may still be going away (a Pod terminating under the same name)."""
    return (
        f"{record.tenant}-{record.name}-{record.id[:8]}"
        f"-{record.generation}-{record.status.restartCount}"
    )


def sandbox_spec(record: AgentRecord, sandbox_id: str) -> SandboxSpec:
    """What the runtime needs, from the agent's spec (limits default to requests)."""
    spec = record.spec
    limits = spec.resources.limits
    cpu = limits.cpu or spec.resources.requests.cpu
    mem = limits.memory or spec.resources.requests.memory
    return SandboxSpec(
        sandbox_id=sandbox_id,
        agent_id=record.id,
        tenant=record.tenant,
        name=record.name,
        image=spec.image,
        runtime_class=spec.runtime.class_,
        command=list(spec.command),
        args=list(spec.args),
        env={e.name: e.value for e in spec.env},
        cpu_millis=cpu_millis(cpu) if cpu else 0,
        memory_bytes=memory_bytes(mem) if mem else 0,
        config=dict(spec.config),
        probe=probe_spec(spec),
        request_cpu_millis=spec.resources.request_cpu_millis(),
        request_memory_bytes=spec.resources.request_memory_bytes(),
        node=record.status.node or "",
        annotations=dict(record.annotations),
    )


def probe_spec(spec: AgentSpec) -> ProbeSpec | None:
    """The readiness probe of `spec` (exec, httpGet or heartbeat), None without one."""
    r = spec.readiness
    if r is None:
        return None
    return ProbeSpec(
        exec_command=list(r.exec.command) if r.exec else None,
        http_port=r.httpGet.port if r.httpGet else None,
        http_path=r.httpGet.path if r.httpGet else "/healthz",
        heartbeat=r.heartbeat is not None,
        period_s=r.periodSeconds,
        timeout_s=r.timeoutSeconds,
        failure_threshold=r.failureThreshold,
    )


def runtime_for(runtimes: dict[str, Runtime], record: AgentRecord) -> Runtime:
    """The runtime serving the agent's runtime class. Raises SandboxError
    RuntimeUnavailable when none does."""
    try:
        return runtimes[record.spec.runtime.class_]
    except KeyError:
        raise SandboxError(
            "RuntimeUnavailable", f"no runtime serves class {record.spec.runtime.class_!r}"
        ) from None


def distinct_runtimes(runtimes: dict[str, Runtime]) -> list[Runtime]:
    """Each runtime once (one backend may serve several runtime classes)."""
    return list({id(r): r for r in runtimes.values()}.values())

"""Settings from the environment, in one place (twelve-factor; architecture/api-compatibility.md).

Every variable is prefixed `AGENTOS_`. Unset NATS means embedded mode: events stay in the
outbox and are served by the API; nothing is faked.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from controlplane.domain.agents.warm_pools import WarmPool

DEFAULT_SQLITE_PATH = Path("agentos.db")


_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _pod_namespace() -> str | None:
    """The namespace of the Pod this runs in (its ServiceAccount's), if any."""
    try:
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


class Settings(BaseSettings):
    """Agent OS settings, read from `AGENTOS_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="AGENTOS_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{DEFAULT_SQLITE_PATH}",
        description="SQLAlchemy async URL; PostgreSQL (asyncpg) or SQLite (aiosqlite).",
    )
    db_pool_size: int = Field(
        default=20,
        ge=1,
        le=500,
        description="PostgreSQL connections each process keeps once opened, and as many again "
        "while busy (SQLAlchemy pool_size, max_overflow). Below the requests a process serves "
        "at once, every request beyond it opens and closes a connection "
        "(architecture/scaling.md, API).",
    )
    nats_url: str | None = Field(
        default=None,
        description="NATS server. Unset: `serve` starts an embedded nats-server with JetStream "
        "(loopback, generated credentials, its store under the state directory).",
    )
    embedded_nats: bool = Field(
        default=True,
        description="With AGENTOS_NATS_URL unset: run the embedded nats-server (false: no relay, "
        "events stay in the outbox).",
    )
    runtime: Literal["containerd", "process", "kubernetes", "simulated"] = Field(
        default="process",
        description="Backend for the container runtime classes (runc, gvisor); the `process` "
        "class runs as a plain child process, except on `kubernetes`, where every class is a "
        "Pod (`process`: the node's default runtime). `simulated` is for benchmarks only.",
    )
    instance: str = Field(
        default="agentos",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Names this installation (its database). Its Pods carry the label "
        "agentos.io/instance; the controller removes leaked Pods of its own instance only.",
    )
    kubernetes_scheduler_name: str = Field(
        default="agentos",
        description="With AGENTOS_RUNTIME=kubernetes: the schedulerName of agent Pods (no other "
        "scheduler binds them; the controller does, through pods/binding).",
    )
    state_dir: Path = Field(default=Path(".agentos"), description="Sandbox state and logs.")
    simulated_start_latency_s: float = 0.0
    controller_workers: int = Field(default=4, ge=1)
    restart_backoff_base_s: float = Field(default=1.0, gt=0)
    node_name: str = "local"
    node_cpu_millis: int = Field(default_factory=lambda: (os.cpu_count() or 1) * 1000)
    node_memory_bytes: int = Field(
        default_factory=lambda: os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    )
    node_max_agents: int = 1000
    api_url: str = "http://127.0.0.1:8080"
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int = Field(
        default=8090, ge=0, le=65535, description="gRPC AgentService port; 0: no gRPC server."
    )
    api_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="REST worker processes of `agentos serve` (component api) on one port "
        "(SO_REUSEPORT): the first runs with the other components, the rest serve REST only. "
        "Rate limits and the token cache are per process.",
    )
    components: str = Field(
        default="api,controller,relay,gateway",
        pattern=r"^(api|controller|relay|gateway)(,(api|controller|relay|gateway))*$",
        description="What `agentos serve` runs, comma-separated: `api` (REST, gRPC), "
        "`controller` (one per database: the agents' and the runs' reconcile loops and the "
        "scheduler), `relay` (outbox to NATS; several may run), `gateway` (the sandboxes' "
        "door: the SDK's run protocol). On Kubernetes each is its own Deployment.",
    )
    gateway_port: int = Field(
        default=8091, ge=1, le=65535, description="The agent gateway's port (component gateway)."
    )
    gateway_host: str = Field(
        default="127.0.0.1",
        pattern=r"^[^,\s]+(,[^,\s]+)*$",
        description="The address(es) the agent gateway and the egress proxy listen on, "
        "comma-separated (e.g. `127.0.0.1,10.89.0.1`: the host's loopback and the sandbox "
        "bridge). An address not (yet) on an interface is bound anyway (IP_FREEBIND).",
    )
    gateway_url: str | None = Field(
        default=None,
        description="The gateway as sandboxes reach it (AGENTOS_GATEWAY_URL in each sandbox); "
        "unset: http://127.0.0.1:<gateway_port>, for sandboxes on the host's network.",
    )
    egress_proxy_port: int = Field(
        default=8092,
        ge=0,
        le=65535,
        description="The egress proxy's port (component gateway), on each AGENTOS_GATEWAY_HOST "
        "address; 0: no egress proxy.",
    )
    egress_proxy_url: str | None = Field(
        default=None,
        description="The egress proxy as sandboxes reach it (their HTTP_PROXY/HTTPS_PROXY, with "
        "their credential added); unset: the gateway URL's host and AGENTOS_EGRESS_PROXY_PORT.",
    )
    egress_resolve: str = Field(
        default="",
        pattern=r"^([^=,\s]+=[^=,\s]+(,[^=,\s]+=[^=,\s]+)*)?$",
        description="Static name-to-address overrides for the egress proxy, `name=ip,name2=ip2` "
        "(as curl --resolve); these addresses are trusted even when not global (tests, "
        "air-gapped sites).",
    )
    egress_connect_timeout_s: float = Field(
        default=10.0, gt=0, description="The egress proxy's limit on resolving and connecting."
    )
    egress_idle_timeout_s: float = Field(
        default=300.0, gt=0, description="An egress connection with no bytes for this long ends."
    )
    egress_max_connections: int = Field(
        default=1024, ge=1, description="Egress connections open at once; more answer 503."
    )
    warm_pools: list[WarmPool] = Field(
        default_factory=list,
        description="Warm pools (architecture/warm-pools.md), a JSON list of "
        '`{"runtimeClass", "image", "command", "args"?, "size", "resources"?: {"cpu", '
        '"memory"}}`: sandboxes started ahead that agents of that runtime class, image, '
        "command, args and limits claim instead of creating one (containerd runtime).",
    )
    run_ack_wait_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a run's delivery stays with a sandbox without a heartbeat before "
        "it is delivered again.",
    )
    # Kubernetes operator (`agentos operator`).
    operator_namespace: str = Field(
        default_factory=lambda: _pod_namespace() or "agentos-system",
        description="Namespace of the operator's Lease (default: the Pod's own namespace).",
    )
    operator_lease: str = Field(default="agentos-operator", min_length=1)
    operator_namespaces: str = Field(
        default="",
        description="Comma-separated namespaces whose Agents the operator serves; empty: "
        "every namespace (cluster-wide).",
    )
    operator_lease_duration_s: int = Field(default=15, ge=2)
    operator_renew_deadline_s: float = Field(default=10.0, gt=0)
    operator_retry_period_s: float = Field(default=2.0, gt=0)
    operator_health_host: str = "0.0.0.0"  # noqa: S104 - probes come from the kubelet
    operator_health_port: int = Field(default=8081, ge=0, le=65535)
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"

    # Outbox relay (adr/0003-outbox-relay-design.md).
    relay_batch_size: int = Field(default=256, ge=1, le=10_000)
    relay_lease_s: float = Field(default=30.0, gt=0)
    relay_poll_interval_s: float = Field(default=1.0, gt=0)
    relay_publish_timeout_s: float = Field(default=5.0, gt=0)
    relay_max_attempts: int = Field(default=8, ge=1)
    relay_backoff_base_s: float = Field(default=0.5, gt=0)
    relay_backoff_max_s: float = Field(default=60.0, gt=0)
    relay_metrics_port: int | None = None
    # Retention (architecture/data-layer.md), run by every relay process; 0 keeps for ever.
    retention_outbox_s: float = Field(
        default=7 * 24 * 3600.0,
        ge=0,
        description="How long a published outbox row is kept (replays reach back this far); "
        "as long as AGENTOS_EVENTS keeps its messages by default.",
    )
    retention_run_steps_s: float = Field(
        default=30 * 24 * 3600.0,
        ge=0,
        description="How long the step journal and checkpoint of an ended run are kept.",
    )
    retention_interval_s: float = Field(default=300.0, gt=0, description="Between purges.")
    retention_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Rows per purge transaction."
    )

    # API (architecture/api-compatibility.md): authentication, rate limits, idempotency keys, watch.
    auth_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified token is trusted without a database read; a token "
        "revoked by another process (the CLI) stops working within this time (0: never cache).",
    )
    rate_limit_per_s: float = Field(
        default=100.0, ge=0, description="Requests per second per principal (0: no limit)."
    )
    rate_limit_burst: float = Field(default=200.0, ge=1)
    idempotency_retention_s: float = Field(
        default=24 * 3600.0, gt=0, description="How long an Idempotency-Key is kept."
    )
    idempotency_purge_interval_s: float = Field(default=600.0, gt=0)
    watch_poll_interval_s: float = Field(default=0.2, gt=0)
    watch_max_timeout_s: float = Field(
        default=1800.0, gt=0, description="Longest a watch stream stays open."
    )
    # Run notifications (architecture/runs.md, Notify), sent by each relay process.
    notify_poll_interval_s: float = Field(
        default=0.5, gt=0, description="How often the notifier looks for ended runs to notify."
    )
    notify_timeout_s: float = Field(
        default=10.0, gt=0, description="The limit on one webhook call (connect to answer)."
    )


def gateway_hosts(settings: Settings) -> list[str]:
    """`settings.gateway_host` as a list of addresses."""
    return [h.strip() for h in settings.gateway_host.split(",") if h.strip()]


def component_set(settings: Settings) -> set[str]:
    """`settings.components` as a set of names."""
    return set(settings.components.split(","))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()

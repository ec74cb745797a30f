"""The Agent object: `apiVersion: agentos.io/v1alpha1`, `kind: Agent`, metadata, spec,
status — shaped by the Kubernetes API conventions.

This model is the single source of validation for REST, gRPC, the CLI and the CRD schema.
`parse_agent` turns a manifest into an Agent or raises ValidationFailed naming each bad
field by JSON pointer (RFC 6901).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from controlplane.domain.agents import egress
from controlplane.domain.agents.lifecycle import RestartPolicy
from controlplane.domain.errors import BadRequest, FieldError, ValidationFailed
from controlplane.domain.quantity import CPU_PATTERN, MEMORY_PATTERN, cpu_millis, memory_bytes

API_VERSION = "agentos.io/v1alpha1"
KIND = "Agent"
# RFC 1123 label, as Kubernetes uses for names that become DNS labels (max 63).
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
RUNTIME_CLASSES = ("runc", "gvisor", "process")


def not_bool(value: Any) -> Any:
    """A before-validator: refuse a JSON boolean where a number is expected."""
    if isinstance(value, bool):
        raise ValueError("a number is required, not a boolean")
    return value


# Numbers as JSON Schema has them: 3.0 is an integer, `true` is not a number.
Int = Annotated[int, BeforeValidator(not_bool)]
Float = Annotated[float, BeforeValidator(not_bool)]


class Strict(BaseModel):
    """Unknown fields are errors, as in Kubernetes strict field validation."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# Kubernetes label syntax: a value is empty or a name of at most 63 characters; a key is such
# a name with an optional DNS-subdomain prefix (`app.kubernetes.io/name`). The same patterns
# are published in the OpenAPI document, so what is documented is what is enforced.
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
LABEL_KEY_PATTERN = rf"^({_DNS_LABEL}(\.{_DNS_LABEL})*/)?{_NAME}$"
LABEL_VALUE_PATTERN = rf"^({_NAME})?$"
LABEL_KEY_MAX = 253 + 1 + 63
_LABELS_SCHEMA: dict[str, JsonValue] = {
    "propertyNames": {"pattern": LABEL_KEY_PATTERN, "maxLength": LABEL_KEY_MAX},
    "additionalProperties": {"type": "string", "pattern": LABEL_VALUE_PATTERN},
}


def label_problem(key: str, value: str) -> str | None:
    """Why `key: value` is not a valid Kubernetes label, or None if it is."""
    if len(key) > LABEL_KEY_MAX or not re.match(LABEL_KEY_PATTERN, key):
        return f"label key {key!r}: [DNS-subdomain/]name, name 1-63 of [A-Za-z0-9-_.]"
    if not re.match(LABEL_VALUE_PATTERN, value):
        return f"label {key!r}: the value must be empty or 1-63 of [A-Za-z0-9-_.]"
    return None


class ObjectMeta(Strict):
    name: str = Field(min_length=1, max_length=63, pattern=DNS1123_LABEL)
    namespace: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=DNS1123_LABEL,
        description="The tenant. Taken from the request path when absent.",
    )
    labels: dict[str, str] = Field(default_factory=dict, json_schema_extra=_LABELS_SCHEMA)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resourceVersion: str | None = None
    generation: Int | None = None
    creationTimestamp: str | None = None
    deletionTimestamp: str | None = None

    @field_validator("labels")
    @classmethod
    def kubernetes_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        problems = [p for k, v in labels.items() if (p := label_problem(k, v))]
        if problems:
            raise ValueError("; ".join(problems))
        return labels


class EnvVar(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str = ""


class ResourceList(Strict):
    cpu: str | None = Field(default=None, pattern=CPU_PATTERN, description="e.g. 500m")
    memory: str | None = Field(default=None, pattern=MEMORY_PATTERN, description="e.g. 256Mi")


class Resources(Strict):
    """Requests are what the scheduler reserves; limits are enforced on the sandbox.
    A missing request defaults to the limit (Kubernetes convention)."""

    requests: ResourceList = Field(default_factory=ResourceList)
    limits: ResourceList = Field(default_factory=ResourceList)

    def request_cpu_millis(self) -> int:
        q = self.requests.cpu or self.limits.cpu
        return cpu_millis(q) if q else 0

    def request_memory_bytes(self) -> int:
        q = self.requests.memory or self.limits.memory
        return memory_bytes(q) if q else 0


class RuntimeSpec(Strict):
    class_: Literal["runc", "gvisor", "process"] = Field(default="runc", alias="class")


class HTTPGetAction(Strict):
    path: str = "/healthz"
    port: Int = Field(ge=1, le=65535)


class ExecAction(Strict):
    command: list[str] = Field(min_length=1)


class HeartbeatAction(Strict):
    """The agent touches the file named by `$AGENTOS_HEARTBEAT_FILE` at least every
    `periodSeconds`."""


class Readiness(Strict):
    """Exactly one of `exec`, `httpGet`, `heartbeat` set (as Kubernetes probes); the others
    absent or null. The CRD carries the rule as CEL (Kubernetes validation rules)."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": [k], "properties": {k: {"type": "object"}}}
                for k in ("exec", "httpGet", "heartbeat")
            ],
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.exec), has(self.httpGet), has(self.heartbeat)]"
                    ".filter(x, x).size() == 1",
                    "message": "exactly one of exec, httpGet, heartbeat is required",
                }
            ],
        }
    )
    exec: ExecAction | None = None
    httpGet: HTTPGetAction | None = None
    heartbeat: HeartbeatAction | None = None
    initialDelaySeconds: Float = Field(default=0, ge=0, le=86400)
    periodSeconds: Float = Field(default=1, gt=0, le=86400)
    timeoutSeconds: Float = Field(default=1, gt=0, le=86400)
    failureThreshold: Int = Field(default=3, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def one_action(self) -> Readiness:
        given = [a for a in (self.exec, self.httpGet, self.heartbeat) if a is not None]
        if len(given) != 1:
            raise ValueError("exactly one of exec, httpGet, heartbeat is required")
        return self


class RunsSpec(Strict):
    """How the agent takes runs: how many at once, what waits, for how long, how often."""

    concurrency: Int = Field(default=1, ge=1, le=64, description="Runs in flight at once.")
    queue: Literal["enqueue", "reject"] = Field(
        default="enqueue",
        description="When every slot is busy: wait in the queue, or refuse (409 AGENT_BUSY).",
    )
    maxQueued: Int = Field(
        default=100, ge=0, le=1_000_000, description="Runs waiting at most; more get AGENT_BUSY."
    )
    timeoutSeconds: Int = Field(
        default=600, ge=1, le=86400, description="A run's default time from creation to its end."
    )
    maxAttempts: Int = Field(
        default=3, ge=1, le=20, description="Deliveries before a run fails (DeliveryExhausted)."
    )
    approval: Literal["none", "destructive", "all"] = Field(
        default="none",
        description="Which tool calls wait for a human; destructive: those declared so.",
    )
    idleSuspendSeconds: Int = Field(
        default=0,
        ge=0,
        le=30 * 86400,
        description="Suspend the agent after this long with no run in flight; 0: never.",
    )


class EgressRule(Strict):
    """One allowlist entry: a host name (exact, or `*.` + a name for its subdomains) and
    the ports allowed on it (controlplane/domain/agents/egress.py has the rules)."""

    host: str = Field(
        min_length=1,
        max_length=egress.MAX_HOST_LENGTH,
        description="`api.example.com`, or `*.example.com` for every name under example.com "
        "(not example.com itself). Lower-cased; IP addresses are refused.",
        # The CRD's share of the rule (case-insensitive: the API lower-cases).
        json_schema_extra={"pattern": egress.HOST_PATTERN},
    )
    ports: list[Int] = Field(
        min_length=1,
        max_length=egress.MAX_PORTS,
        description="TCP ports allowed on the host, 1-65535 (duplicates dropped).",
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 65535}},
    )

    @field_validator("host")
    @classmethod
    def dns_name(cls, host: str) -> str:
        return egress.normalize_host(host)

    @field_validator("ports")
    @classmethod
    def port_range(cls, ports: list[int]) -> list[int]:
        return egress.normalize_ports(ports)


class NetworkSpec(Strict):
    """What the sandbox may reach beyond the agent gateway (architecture/networking.md)."""

    egress: list[EgressRule] = Field(
        default_factory=list,
        max_length=egress.MAX_RULES,
        description="Hosts and ports reachable through the egress proxy; empty (the default): "
        "nothing leaves the sandbox.",
    )


class AgentSpec(Strict):
    image: str = Field(
        min_length=1,
        description=(
            "OCI image reference, or `oci-archive:/absolute/path.tar` for a local OCI archive "
            "(containers-transports syntax); ignored by `process`."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!self.startsWith('oci-archive:') || self.startsWith('oci-archive:/')",
                    "message": "an oci-archive: image needs an absolute path",
                }
            ]
        },
    )
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(
        default_factory=list,
        # Names are unique (unique_env below); in the CRD, a list-map keyed by name.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    resources: Resources = Field(default_factory=Resources)
    restartPolicy: RestartPolicy = RestartPolicy.ALWAYS
    maxRestarts: Int = Field(default=5, ge=0, le=1_000_000)
    readiness: Readiness | None = None
    priority: Int = Field(default=0, ge=-1000, le=1000)
    runs: RunsSpec = Field(default_factory=RunsSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    config: dict[str, Any] = Field(
        default_factory=dict, description="Free-form; handed to the agent as a JSON file."
    )

    @field_validator("image")
    @classmethod
    def archive_path_is_absolute(cls, image: str) -> str:
        if image.startswith("oci-archive:") and not image[len("oci-archive:") :].startswith("/"):
            raise ValueError("an oci-archive: image needs an absolute path")
        return image

    @field_validator("env")
    @classmethod
    def unique_env(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [e.name for e in env]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate environment variables: {dupes}")
        return env

    def sandbox_fingerprint(self) -> dict[str, Any]:
        """The part of the spec that shapes the sandbox: a change means a new sandbox.
        `network` is not in it: the egress proxy reads the rules at each authentication."""
        return self.model_dump(
            mode="json", by_alias=True, exclude={"priority", "maxRestarts", "runs", "network"}
        )


class Agent(Strict):
    apiVersion: Literal["agentos.io/v1alpha1"]
    kind: Literal["Agent"]
    metadata: ObjectMeta
    spec: AgentSpec
    status: dict[str, Any] | None = Field(
        default=None, description="Observed state; ignored on write."
    )


def _pointer(loc: tuple[int | str, ...]) -> str:
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc if p != "class_"]
    return "/" + "/".join(parts) if parts else ""


def unstorable(value: Any, pointer: str = "") -> list[FieldError]:
    """Strings no database can keep: a NUL character (PostgreSQL text and JSONB refuse it) or
    a lone UTF-16 surrogate (not encodable as UTF-8; JSON allows the escape)."""

    def bad(text: str) -> bool:
        return "\x00" in text or any("\ud800" <= ch <= "\udfff" for ch in text)

    def escape(key: str) -> str:
        return key.replace("~", "~0").replace("/", "~1")

    found: list[FieldError] = []
    if isinstance(value, str):
        if bad(value):
            found.append(FieldError(pointer, "contains a NUL or an unpaired surrogate"))
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and bad(key):
                found.append(FieldError(pointer, "a key contains a NUL or an unpaired surrogate"))
                continue
            found += unstorable(item, f"{pointer}/{escape(str(key))}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += unstorable(item, f"{pointer}/{i}")
    return found


def parse_agent(manifest: Any) -> Agent:
    """Validate a manifest (a mapping) as an Agent.

    Raises:
        ValidationFailed: with one FieldError per problem; `pointer` is an RFC 6901 JSON
            pointer into the manifest (e.g. `/spec/resources/limits/cpu`).
        BadRequest: a string holds a NUL or an unpaired surrogate (malformed text, named by
            pointer likewise).
    """
    refuse_unstorable(manifest)
    try:
        return Agent.model_validate(manifest)
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{fe.pointer}: {fe.message}" for fe in errors)
        raise ValidationFailed(f"invalid Agent: {detail}", errors=errors) from None


def refuse_unstorable(document: Any) -> None:
    """Raise BadRequest naming (by JSON pointer) each string of `document` that no database
    can store (see `unstorable`)."""
    found = unstorable(document)
    if found:
        detail = "; ".join(f"{fe.pointer}: {fe.message}" for fe in found)
        raise BadRequest(f"text that cannot be stored: {detail}", errors=found)


def field_errors(exc: ValidationError) -> list[FieldError]:
    """One FieldError per problem pydantic found, named by RFC 6901 JSON pointer into the
    validated document; unknown and missing fields get a plain message."""
    errors = []
    for e in exc.errors():
        loc = tuple("class" if p == "class_" else p for p in e["loc"])
        message = e["msg"]
        if e["type"] == "extra_forbidden":
            message = "unknown field"
        elif e["type"] == "missing":
            message = "required field is missing"
        errors.append(FieldError(_pointer(loc), message))
    return errors


class AgentStatus(BaseModel):
    """Observed state (Kubernetes API conventions). Times are RFC 3339 UTC strings."""

    model_config = ConfigDict(extra="ignore")

    phase: str = "Created"
    reason: str = ""
    message: str = ""
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    observedGeneration: int = 0
    restartCount: int = 0
    node: str | None = None
    runtimeClass: str | None = None
    sandboxID: str | None = None
    startedAt: str | None = None
    readyAt: str | None = None
    failedAt: str | None = None
    exitCode: int | None = None
    sandboxHash: str | None = Field(
        default=None, description="Digest of the spec the sandbox was built from."
    )
    suspension: dict[str, Any] | None = Field(
        default=None,
        description="While suspended or resuming: state (Suspending, Suspended, Resuming), "
        "reason, requestedAt, memoryKept, imageBytes (service/suspension.py).",
    )

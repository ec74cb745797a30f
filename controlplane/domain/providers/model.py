"""A tenant's model provider: an OpenAI-compatible upstream the agent gateway proxies to
(architecture/model-gateway.md).

    {"name": "openai", "baseUrl": "https://api.openai.com/v1",
     "credentialRef": {"env": "OPENAI_API_KEY"},          # or {"file": "/run/secrets/key"}
     "models": ["gpt-4o-mini", "text-embedding-3-small"],
     "pricing": {"input": "0.15", "output": "0.60", "cachedInput": "0.075"},  # USD / 1M tokens
     "limits": {"tokenBudget": 1000000, "budgetWindowSeconds": 86400,
                "requestsPerMinute": 600}}

`credentialRef` names where the serving process finds the secret; the secret itself is never
stored, nor answered. `parse_provider` validates a body or raises ValidationFailed naming
each bad field by RFC 6901 JSON pointer, as `parse_agent` does for agents.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from controlplane.domain.agents.model import (
    DNS1123_LABEL,
    Int,
    Strict,
    field_errors,
    refuse_unstorable,
)
from controlplane.domain.errors import BadRequest, ValidationFailed
from controlplane.domain.events.envelope import rfc3339

KIND = "ModelProvider"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
BASE_URL = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$"
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$"
WINDOW_MAX_S = 31 * 86400


def _decimal(value: Any) -> Any:
    """Prices are decimals: a JSON string ("0.15") or number; never a bool."""
    if isinstance(value, bool):
        raise ValueError("a price is a decimal number of USD, not a boolean")
    if isinstance(value, int | float):
        return Decimal(str(value))
    return value


PRICE_TEXT = r"^(1000000(\.0+)?|[0-9]{1,6}(\.[0-9]{1,12})?)$"
Price = Annotated[
    Decimal,
    BeforeValidator(_decimal),
    Field(ge=0, le=1_000_000),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1_000_000},
                {"type": "string", "pattern": PRICE_TEXT},
            ]
        }
    ),
]


class CredentialRef(Strict):
    """Where the serving process reads the provider's secret: exactly one of `env` (the name
    of an environment variable) or `file` (an absolute path; its content, stripped)."""

    # Exactly one of the two, as the JSON schema says too (`additionalProperties` is false).
    model_config = ConfigDict(
        json_schema_extra={
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "env": {"type": "string", "pattern": ENV_NAME},
                "file": {"type": "string", "pattern": "^/", "minLength": 2, "maxLength": 4096},
            },
        }
    )

    env: str | None = Field(default=None, pattern=ENV_NAME)
    file: str | None = Field(default=None, min_length=2, max_length=4096, pattern=r"^/")

    @model_validator(mode="after")
    def exactly_one(self) -> CredentialRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of `env` or `file`")
        if self.file is not None and not self.file.startswith("/"):
            raise ValueError("`file` must be an absolute path")
        return self


class Pricing(Strict):
    """USD per million tokens. `cachedInput` absent: cached input is priced as input."""

    input: Price = Decimal(0)
    output: Price = Decimal(0)
    cachedInput: Price | None = None


class ProviderLimits(Strict):
    """The tenant's limits on this provider, shared by all its agents: `tokenBudget` total
    tokens (input + output) per window of `budgetWindowSeconds` (fixed windows aligned to
    the epoch), and `requestsPerMinute`. Absent: no limit."""

    # The bounds also as JSON Schema keywords (pydantic leaves `Int | None`'s out).
    tokenBudget: Int | None = Field(default=None, ge=1, json_schema_extra={"minimum": 1})
    budgetWindowSeconds: Int = Field(default=86400, ge=60, le=WINDOW_MAX_S)
    requestsPerMinute: Int | None = Field(
        default=None, ge=1, le=1_000_000, json_schema_extra={"minimum": 1, "maximum": 1_000_000}
    )


class ProviderSpec(Strict):
    """What a tenant writes; `name` is the provider's (a DNS-1123 label)."""

    name: str | None = Field(default=None, pattern=DNS1123_LABEL, max_length=63)
    baseUrl: str = Field(min_length=8, max_length=2048, pattern=BASE_URL)
    credentialRef: CredentialRef
    models: list[Annotated[str, Field(pattern=MODEL_NAME)]] = Field(
        min_length=1, max_length=200, json_schema_extra={"uniqueItems": True}
    )
    pricing: Pricing = Field(default_factory=Pricing)
    limits: ProviderLimits = Field(default_factory=ProviderLimits)

    @field_validator("baseUrl")
    @classmethod
    def http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must have no query, fragment or user information")
        return value.rstrip("/")

    @field_validator("models")
    @classmethod
    def distinct(cls, models: list[str]) -> list[str]:
        if len(set(models)) != len(models):
            raise ValueError("lists a model twice")
        return models


def parse_provider(body: Any, name: str) -> ProviderSpec:
    """Validate the body of a create (or replace) of provider `name`.

    Raises:
        ValidationFailed: one FieldError per problem (`/baseUrl`, `/credentialRef`,
            `/pricing/input`, ...).
        BadRequest: a string holds a NUL or an unpaired surrogate, or `name` is not the
            name in the path.
    """
    refuse_unstorable(body)
    try:
        spec = ProviderSpec.model_validate(body)
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{fe.pointer or '/'}: {fe.message}" for fe in errors)
        raise ValidationFailed(f"invalid model provider: {detail}", errors=errors) from None
    if spec.name not in (None, name):
        # As Kubernetes answers a name that differs from the URL's: 400, not a field error.
        raise BadRequest(f"the body's name {spec.name!r} is not {name!r}, the name in the path")
    return spec.model_copy(update={"name": name})


@dataclass(frozen=True)
class ProviderRecord:
    """One stored provider of `tenant` (`id` a uid, `resource_version` bumps per write)."""

    id: str
    tenant: str
    name: str
    spec: ProviderSpec
    resource_version: int
    created_at: datetime

    def to_object(self) -> dict[str, Any]:
        """The provider as the API answers it: the credential's reference, never a secret;
        prices as decimal strings."""
        spec = self.spec.model_dump(mode="json", exclude={"name"}, exclude_none=True)
        return {
            "apiVersion": "agentos.io/v1alpha1",
            "kind": KIND,
            "metadata": {
                "name": self.name,
                "tenant": self.tenant,
                "uid": self.id,
                "resourceVersion": str(self.resource_version),
                "creationTimestamp": rfc3339(self.created_at),
            },
            "spec": spec,
        }

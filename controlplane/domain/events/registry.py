"""SchemaRegistry: one JSON Schema (draft 2020-12) per `event_type` + `schema_version`.

The outbox asks the registry before it writes an event: a payload that fails its schema is
refused (nothing is written). A schema, once registered or released, may only change in ways
that keep every consumer of it working (see `compatibility_problems`); anything else needs a
new `schema_version`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from controlplane.domain.errors import (
    EventSchemaViolation,
    FieldError,
    IncompatibleSchema,
    UnknownEventType,
)

SchemaKey = tuple[str, int]


def compatibility_problems(
    old: Mapping[str, Any], new: Mapping[str, Any], path: str = ""
) -> list[str]:
    """Ways in which `new` would break a consumer written against `old`; empty if none.

    The rule is consumer safety: every payload valid under `new` must stay valid under `old`.
    So, at every level: the `type` may not change; properties of `old` may not disappear or
    become incompatible; a field that was required stays required; an enum may only shrink;
    and where `old` forbids extra properties, `new` may not add any.
    """
    problems: list[str] = []
    where = path or "/"
    if old.get("type") != new.get("type"):
        problems.append(f"{where}: type changed from {old.get('type')!r} to {new.get('type')!r}")
        return problems
    if "enum" in old:
        added = [v for v in new.get("enum", []) if v not in old["enum"]]
        if "enum" not in new or added:
            problems.append(f"{where}: enum widened by {added or 'removing the enum'}")
    if "const" in old and new.get("const") != old["const"]:
        problems.append(f"{where}: const changed")
    missing_required = set(old.get("required", [])) - set(new.get("required", []))
    if missing_required:
        problems.append(f"{where}: no longer requires {sorted(missing_required)}")
    old_props: Mapping[str, Any] = old.get("properties", {})
    new_props: Mapping[str, Any] = new.get("properties", {})
    for name, old_sub in old_props.items():
        if name not in new_props:
            if name in old.get("required", []):
                problems.append(f"{path}/{name}: required property removed")
            continue
        problems.extend(compatibility_problems(old_sub, new_props[name], f"{path}/{name}"))
    if old.get("additionalProperties") is False:
        added_props = sorted(set(new_props) - set(old_props))
        if added_props or new.get("additionalProperties", True) is not False:
            problems.append(f"{where}: adds properties {added_props} where none were allowed")
    if "items" in old and "items" in new:
        problems.extend(compatibility_problems(old["items"], new["items"], f"{path}/items"))
    return problems


class SchemaRegistry:
    """Registered event schemas, keyed by (`event_type`, `schema_version`)."""

    def __init__(self) -> None:
        self._schemas: dict[SchemaKey, dict[str, Any]] = {}
        self._validators: dict[SchemaKey, Draft202012Validator] = {}

    def register(self, event_type: str, schema_version: int, schema: Mapping[str, Any]) -> None:
        """Register (or compatibly update) the schema of `event_type` v`schema_version`.

        Raises:
            IncompatibleSchema: the key is registered and `schema` would break its consumers,
                or `schema` is not a valid JSON Schema.
        """
        key = (event_type, schema_version)
        Draft202012Validator.check_schema(schema)
        if key in self._schemas:
            problems = compatibility_problems(self._schemas[key], schema)
            if problems:
                raise IncompatibleSchema(
                    f"{event_type} v{schema_version}: incompatible change: " + "; ".join(problems)
                )
        self._schemas[key] = dict(schema)
        self._validators[key] = Draft202012Validator(schema)

    def schema(self, event_type: str, schema_version: int) -> dict[str, Any]:
        """The registered schema. Raises UnknownEventType if there is none."""
        try:
            return self._schemas[(event_type, schema_version)]
        except KeyError:
            raise UnknownEventType(
                f"no schema registered for event type {event_type!r} version {schema_version}"
            ) from None

    def validate(self, event_type: str, schema_version: int, payload: Mapping[str, Any]) -> None:
        """Check `payload` against its schema.

        Raises:
            UnknownEventType: nothing registered under that type and version.
            EventSchemaViolation: the payload fails; `errors` holds a JSON pointer per failure.
        """
        self.schema(event_type, schema_version)
        validator = self._validators[(event_type, schema_version)]
        failures = sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
        if failures:
            errors = [
                FieldError("/payload" + "".join(f"/{p}" for p in e.absolute_path), e.message)
                for e in failures
            ]
            raise EventSchemaViolation(
                f"payload of {event_type} v{schema_version} fails its schema: "
                + "; ".join(f"{fe.pointer}: {fe.message}" for fe in errors),
                errors=errors,
            )

    def keys(self) -> list[SchemaKey]:
        """Every registered (event_type, schema_version), sorted."""
        return sorted(self._schemas)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """All schemas as `{"type@vN": schema}`, the form of the release snapshot."""
        return {f"{t}@v{v}": self._schemas[(t, v)] for t, v in self.keys()}

    def check_against_snapshot(self, released: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Problems that would break consumers of a released snapshot; empty if none.

        A released schema may not disappear and may only change compatibly.
        """
        problems: list[str] = []
        for name, old in released.items():
            event_type, _, version = name.rpartition("@v")
            key = (event_type, int(version))
            if key not in self._schemas:
                problems.append(f"{name}: released schema is no longer registered")
                continue
            problems.extend(f"{name}{p}" for p in compatibility_problems(old, self._schemas[key]))
        return problems


def load_builtin_schemas(names: Iterable[str] | None = None) -> SchemaRegistry:
    """A registry holding every schema shipped in `controlplane/domain/events/schemas/`.

    Files are named `<event_type>.v<version>.json`.
    """
    registry = SchemaRegistry()
    folder = resources.files("controlplane.domain.events") / "schemas"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        stem = entry.name.removesuffix(".json")
        event_type, _, version = stem.rpartition(".v")
        if names is not None and event_type not in names:
            continue
        registry.register(event_type, int(version), json.loads(entry.read_text()))
    return registry

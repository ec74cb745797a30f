"""SchemaRegistry: payload validation and the compatibility rule for schema changes."""

from __future__ import annotations

import copy

import pytest

from controlplane.domain.errors import EventSchemaViolation, IncompatibleSchema, UnknownEventType
from controlplane.domain.events.registry import (
    SchemaRegistry,
    compatibility_problems,
    load_builtin_schemas,
)

BASE = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "phase": {"type": "string", "enum": ["A", "B"]}},
    "required": ["name"],
}


def changed(**edits: object) -> dict:
    schema = copy.deepcopy(BASE)
    schema.update(edits)
    return schema


def test_a_payload_that_fails_its_schema_names_the_field() -> None:
    registry = SchemaRegistry()
    registry.register("thing.happened", 1, BASE)
    with pytest.raises(EventSchemaViolation) as caught:
        registry.validate("thing.happened", 1, {"name": 7})
    assert caught.value.errors[0].pointer == "/payload/name"
    assert "is not of type 'string'" in caught.value.errors[0].message


def test_an_unregistered_event_type_is_refused() -> None:
    with pytest.raises(UnknownEventType, match="'nope' version 9"):
        SchemaRegistry().validate("nope", 9, {})


def test_adding_an_optional_property_is_compatible() -> None:
    new = copy.deepcopy(BASE)
    new["properties"]["extra"] = {"type": "integer"}
    assert compatibility_problems(BASE, new) == []


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        (changed(required=[]), "no longer requires ['name']"),
        (
            changed(properties={"phase": BASE["properties"]["phase"]}),
            "/name: required property removed",
        ),
        (
            changed(properties={**BASE["properties"], "name": {"type": "integer"}}),
            "/name: type changed",
        ),
        (
            changed(
                properties={
                    **BASE["properties"],
                    "phase": {"type": "string", "enum": ["A", "B", "C"]},
                }
            ),
            "/phase: enum widened by ['C']",
        ),
    ],
)
def test_breaking_changes_are_named(new: dict, problem: str) -> None:
    assert any(problem in p for p in compatibility_problems(BASE, new))


def test_registering_an_incompatible_change_to_a_registered_schema_is_refused() -> None:
    registry = SchemaRegistry()
    registry.register("thing.happened", 1, BASE)
    with pytest.raises(IncompatibleSchema, match="no longer requires"):
        registry.register("thing.happened", 1, changed(required=[]))
    registry.register("thing.happened", 2, changed(required=[]))  # a new version may differ
    assert registry.keys() == [("thing.happened", 1), ("thing.happened", 2)]


def test_builtin_schemas_load_and_a_dropped_release_schema_is_reported() -> None:
    registry = load_builtin_schemas()
    assert ("agent.phase_changed", 1) in set(registry.keys())
    released = {**registry.snapshot(), "gone.event@v1": BASE}
    assert registry.check_against_snapshot(released) == [
        "gone.event@v1: released schema is no longer registered"
    ]

"""The shipped CRD is exactly what the Agent model generates (no drift), and structural."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from controlplane.domain.agents.crd import agent_crd

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_crd_is_generated_from_the_model() -> None:
    spec = importlib.util.spec_from_file_location("gen_crd", ROOT / "hack" / "gen-crd.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    shipped = (ROOT / "deploy" / "crds" / "agents.agentos.io.yaml").read_text()
    assert shipped == gen.render(), "deploy/crds drifted from the model: run `make crds`"


def _walk(node: Any, path: str = "") -> list[str]:
    problems = []
    if isinstance(node, dict):
        for banned in ("$ref", "anyOf", "const", "title", "$defs"):
            if banned in node:
                problems.append(f"{path}: {banned}")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties false")
        if "properties" in node and node.get("type") != "object":
            problems.append(f"{path}: properties without type object")
        for key, value in node.items():
            problems += _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            problems += _walk(value, f"{path}/{i}")
    return problems


def test_the_schema_is_structural() -> None:
    schema = agent_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["image"]
    assert spec["properties"]["runtime"]["properties"]["class"]["enum"] == [
        "runc",
        "gvisor",
        "process",
    ]
    assert spec["properties"]["config"]["x-kubernetes-preserve-unknown-fields"] is True
    assert yaml.safe_load(yaml.safe_dump(agent_crd())) == agent_crd()

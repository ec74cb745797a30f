"""The Agent CustomResourceDefinition, generated from the same model the API validates with.

`agent_crd()` turns the pydantic JSON Schema of `AgentSpec` into the structural OpenAPI v3
schema an `apiextensions.k8s.io/v1` CRD requires (Kubernetes "Specifying a structural
schema"): references inlined, `anyOf [X, null]` as a nullable X, `const` as a one-value enum,
an exclusive bound as OpenAPI 3.0's boolean form, no `additionalProperties: false` (the
apiserver prunes or, with strict field validation, refuses unknown fields), free-form objects
as `x-kubernetes-preserve-unknown-fields`. Rules pydantic checks in code travel in the model
as `x-kubernetes-validations` (CEL) or list-map keys, so both sides enforce them.

`make crds` writes deploy/crds/agents.agentos.io.yaml; tests/unit/test_crd.py fails if the file
and the model drift.
"""

from __future__ import annotations

from typing import Any

from controlplane.domain.agents.model import API_VERSION, DNS1123_LABEL, KIND, AgentSpec

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "agents"
# oneOf: the OpenAPI form of a rule the CRD states as CEL (structural schemas forbid its shape).
DROP = {"title", "$defs", "oneOf"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) == 1 and len(options) < len(node["anyOf"]):
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return _structural({**options[0], **rest, "nullable": True}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROP or (key == "default" and value is None):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "additionalProperties" and value is False:
            continue
        elif key == "additionalProperties" and value is True:
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif key == "properties":
            out[key] = {name: _structural(v, defs) for name, v in value.items()}
        else:
            out[key] = _structural(value, defs)
    if "properties" in node and "type" not in out:
        out["type"] = "object"
    return out


def spec_schema() -> dict[str, Any]:
    """The structural schema of `spec`, from AgentSpec."""
    raw = AgentSpec.model_json_schema(by_alias=True)
    return dict(_structural(raw, raw.get("$defs", {})))


def agent_crd() -> dict[str, Any]:
    """The CRD `agents.agentos.io`: namespaced (namespace = tenant), status subresource,
    printer columns Phase, Runtime, Node, Ready, Age; short name `ag`."""
    schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": {
                "type": "object",
                "description": "Observed state, written by Agent OS.",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.matches('{DNS1123_LABEL}')"
                " && size(self.metadata.name) <= 63",
                "message": "metadata.name must be a DNS-1123 label (RFC 1123, at most 63 "
                "characters)",
            }
        ],
    }
    columns = [
        ("Phase", "string", ".status.phase"),
        ("Runtime", "string", ".spec.runtime.class"),
        ("Node", "string", ".status.node"),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["ag"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": name, "type": type_, "jsonPath": path}
                        for name, type_, path in columns
                    ],
                }
            ],
        },
    }

"""A JSON Schema (draft 2020-12) for a function's parameters, read from its signature.

Covers what tool arguments are in practice: str, int, float, bool, None, list[X],
dict[str, X], X | None, Literal[...]; anything else is an unconstrained `{}`.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from agentos_sdk._core.protocol import JSON

_SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def parameters_schema(fn: Callable[..., Any]) -> dict[str, JSON]:
    """`{"type": "object", "properties": {...}, "required": [...]}` for `fn`'s parameters.

    Parameters with a default are optional; `*args`/`**kwargs` are skipped.
    """
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):
        hints = {}
    properties: dict[str, JSON] = {}
    required: list[JSON] = []
    for name, parameter in inspect.signature(fn).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        properties[name] = type_schema(hints.get(name, Any))
        if parameter.default is parameter.empty:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


def type_schema(annotation: Any) -> dict[str, JSON]:
    """The JSON Schema of one annotation."""
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [type_schema(arg) for arg in args]}
    if annotation is list or origin is list:
        return {"type": "array", "items": type_schema(args[0])} if args else {"type": "array"}
    if annotation is dict or origin is dict:
        if len(args) == 2:
            return {"type": "object", "additionalProperties": type_schema(args[1])}
        return {"type": "object"}
    return {}

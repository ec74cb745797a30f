"""Tools an agent registers: a name, the function, a description, an input schema, and
whether it is destructive (MCP's `destructiveHint`; with `spec.runs.approval: destructive`
such a call asks a human first: `Run.call_tool`)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agentos_sdk._core.protocol import JSON
from agentos_sdk._core.schema import parameters_schema

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # MCP / OpenAI tool names


@dataclass(frozen=True)
class Tool:
    """A registered tool. `input_schema`: JSON Schema of its keyword arguments."""

    name: str
    fn: Callable[..., Any] = field(repr=False)
    description: str = ""
    destructive: bool = False
    input_schema: dict[str, JSON] = field(default_factory=dict, repr=False)

    @classmethod
    def of(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        destructive: bool = False,
    ) -> Tool:
        """A Tool for `fn`: the name defaults to its `__name__`, the description to the
        first paragraph of its docstring. Raises ValueError for a name MCP would refuse."""
        tool_name = name or str(getattr(fn, "__name__", ""))
        if not _NAME.match(tool_name):
            raise ValueError(f"tool name {tool_name!r} must match {_NAME.pattern}")
        doc = inspect.getdoc(fn) or ""
        return cls(
            name=tool_name,
            fn=fn,
            description=description if description is not None else doc.split("\n\n")[0],
            destructive=destructive,
            input_schema=parameters_schema(fn),
        )

    def as_mcp(self) -> dict[str, JSON]:
        """The tool as an MCP `Tool` object (`name`, `description`, `inputSchema`,
        `annotations.destructiveHint`)."""
        return {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
            "annotations": {"destructiveHint": self.destructive},
        }


class ToolRegistry:
    """The tools of one agent, by name."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def add(self, tool: Tool) -> None:
        """Register `tool`. Raises ValueError when its name is taken."""
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def resolve(self, tool: Tool | str | Callable[..., Any]) -> Tool:
        """The Tool for a Tool, a name or a registered function. Raises LookupError."""
        if isinstance(tool, Tool):
            return tool
        if isinstance(tool, str):
            if tool in self._tools:
                return self._tools[tool]
        else:
            for candidate in self._tools.values():
                if candidate.fn is tool:
                    return candidate
        known = ", ".join(sorted(self._tools)) or "none"
        raise LookupError(f"no tool {tool!r} is registered (registered: {known})")

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

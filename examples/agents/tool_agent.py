"""An example agent that answers each run by calling the tools it registers.

Tools (real ones, with real effects):
- `calculate(expression)`: arithmetic on numbers (`+ - * / // % **`, parentheses), parsed
  with `ast`; names, calls and attributes are refused, so nothing is evaluated but numbers.
- `write_file(path, content)`: writes a text file under the agent's work directory
  (`$AGENTOS_WORK_DIR`, else `work/` under the current directory); a path that leaves it is
  refused. Destructive: with `spec.runs.approval: destructive` its calls wait for a human.

Who decides which tools to call:
- without `AGENTOS_MODEL_URL`, a deterministic planner reads the input —
  `{"task": "compute 2+3*4 and save it to result.txt"}` or
  `{"expression": "2+3*4", "file": "result.txt"}` — into tool calls; the plan is a `custom`
  step named `plan`, each call a `tool` step;
- with `AGENTOS_MODEL_URL` (an OpenAI-compatible endpoint: `POST {url}/chat/completions`;
  `AGENTOS_MODEL` names the model, default `gpt-4o-mini`; `AGENTOS_MODEL_API_KEY` is sent as
  a bearer token when set), the model gets the tools in OpenAI's function-calling format and
  the agent loops on its `tool_calls`; each model call is an `llm` step with its usage.

Run it in a sandbox (examples/agents/tool-agent.yaml) or by hand with the SDK's variables
(AGENTOS_GATEWAY_URL, AGENTOS_AGENT_TOKEN): `python3 examples/agents/tool_agent.py`.
"""

from __future__ import annotations

import ast
import json
import operator
import os
import re
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentos_sdk import Agent, ApprovalRejected, Run, StepFailed

WORK_DIR = "AGENTOS_WORK_DIR"
MODEL_URL = "AGENTOS_MODEL_URL"
MODEL = "AGENTOS_MODEL"
MODEL_API_KEY = "AGENTOS_MODEL_API_KEY"
DEFAULT_MODEL = "gpt-4o-mini"
MAX_MODEL_TURNS = 8
MAX_EXPRESSION = 200  # characters
MAX_EXPONENT = 1000
MAX_FILE_BYTES = 1 << 20

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
# "compute 2+3*4 and save it to result.txt" (the "and save ..." part is optional).
_TASK = re.compile(
    r"^\s*(?:compute|calculate|evaluate|what\s+is)\s+(?P<expression>.+?)"
    r"(?:\s*,?\s+and\s+(?:save|write|store)\s+(?:it|the\s+result)\s+(?:to|in|into)\s+"
    r"(?P<file>[\w./-]+?))?\s*[.?!]?\s*$",
    re.IGNORECASE,
)
SYSTEM_PROMPT = (
    "You are an agent with tools. Use `calculate` for any arithmetic and `write_file` to "
    "save files when the user asks. Answer briefly once the work is done."
)


def calculate(expression: str) -> int | float:
    """Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses."""
    if len(expression) > MAX_EXPRESSION:
        raise ValueError(f"the expression is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from exc
    return _evaluate(tree.body)


def _evaluate(node: ast.expr) -> int | float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):  # True is an int to Python, not a number here
            raise ValueError(f"not a number: {node.value!r}")
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))  # type: ignore[no-any-return]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"an exponent above {MAX_EXPONENT} is refused")
        return _BINARY[type(node.op)](left, right)  # type: ignore[no-any-return]
    raise ValueError(f"not allowed in an arithmetic expression: {ast.unparse(node)!r}")


def work_dir() -> Path:
    """The agent's writable folder: `$AGENTOS_WORK_DIR`, else `work/` under the cwd."""
    return Path(os.environ.get(WORK_DIR) or "work").resolve()


def write_file(path: str, content: str) -> dict[str, Any]:
    """Write a UTF-8 text file under the agent's work directory; returns its path and size."""
    root = work_dir()
    target = (root / path).resolve()
    if Path(path).is_absolute() or not target.is_relative_to(root) or target == root:
        raise PermissionError(f"{path!r} is outside the agent's work directory")
    data = content.encode()
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"the content is larger than {MAX_FILE_BYTES} bytes")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_bytes(data)
    temporary.replace(target)
    return {"path": str(target.relative_to(root)), "bytes": len(data)}


def plan(task: Any) -> list[dict[str, Any]]:
    """The tool calls for a run's input, by rule: `[{"tool": name, "arguments": {...}}]`.

    A string argument may hold `{calculate}`, replaced by that tool's output when the call is
    made. Raises ValueError for an input the rules do not read.
    """
    if isinstance(task, dict) and "expression" in task:
        expression, file = str(task["expression"]), task.get("file")
    else:
        text = task.get("task") if isinstance(task, dict) else task
        match = _TASK.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"cannot plan {task!r}: say {{'task': 'compute <expression> [and save it to "
                "<file>]'}} or {'expression': ..., 'file': ...}, or set AGENTOS_MODEL_URL"
            )
        expression, file = match["expression"].strip(), match["file"]
    calls: list[dict[str, Any]] = [{"tool": "calculate", "arguments": {"expression": expression}}]
    if file:
        content = f"{expression} = {{calculate}}\n"
        calls.append({"tool": "write_file", "arguments": {"path": str(file), "content": content}})
    return calls


async def follow_plan(run: Run) -> dict[str, Any]:
    """The planner's answer: the plan as a `custom` step, then each call as a `tool` step."""
    calls = await run.step("plan", plan, run.input)
    outputs: dict[str, Any] = {}
    refused: list[str] = []
    for call in calls:
        arguments = {
            name: _fill(value, outputs) if isinstance(value, str) else value
            for name, value in call["arguments"].items()
        }
        try:
            outputs[call["tool"]] = await run.call_tool(call["tool"], **arguments)
        except ApprovalRejected as no:  # a human said no (spec.runs.approval)
            refused.append(str(no))
    result = outputs["calculate"]
    answer: dict[str, Any] = {
        "answer": f"{calls[0]['arguments']['expression']} = {result}",
        "result": result,
        "planner": "rules",
    }
    if "write_file" in outputs:
        answer["file"] = outputs["write_file"]
    if refused:
        answer["refused"] = refused
    return answer


def _fill(template: str, outputs: dict[str, Any]) -> str:
    for tool, output in outputs.items():
        template = template.replace("{" + tool + "}", str(output))
    return template


def complete(**request: Any) -> dict[str, Any]:
    """POST `request` to `$AGENTOS_MODEL_URL/chat/completions`; the chat completion (a dict).

    Raises RuntimeError with the endpoint's answer on an HTTP error, OSError when it cannot
    be reached (the `llm` step then fails).
    """
    url = os.environ[MODEL_URL].rstrip("/") + "/chat/completions"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{MODEL_URL} must be an http(s) URL, got {url!r}")
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if os.environ.get(MODEL_API_KEY):
        headers["Authorization"] = f"Bearer {os.environ[MODEL_API_KEY]}"
    body = json.dumps(request).encode()
    post = urllib.request.Request(url, body, headers, method="POST")  # noqa: S310 - checked
    try:
        with urllib.request.urlopen(post, timeout=120) as response:  # noqa: S310 - checked
            completion: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read(2000).decode(errors="replace")
        raise RuntimeError(f"{url} answered {exc.code}: {detail}") from exc
    return completion


def openai_tools(agent: Agent) -> list[dict[str, Any]]:
    """The agent's tools in OpenAI's function-calling format."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.input_schema,
            },
        }
        for tool in agent.tools
    ]


async def ask_model(run: Run, agent: Agent) -> dict[str, Any]:
    """The model's answer: chat, call the tools it asks for, repeat until it answers."""
    task = run.input.get("task") if isinstance(run.input, dict) else run.input
    content = task if isinstance(task, str) else json.dumps(run.input)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": content},
    ]
    model = os.environ.get(MODEL) or DEFAULT_MODEL
    tools = openai_tools(agent)
    for turn in range(1, MAX_MODEL_TURNS + 1):
        reply = await run.chat(complete, model=model, messages=messages, tools=tools)
        message = reply["choices"][0]["message"]
        calls = message.get("tool_calls") or []
        messages.append(
            {"role": "assistant", "content": message.get("content"), "tool_calls": calls}
            if calls
            else {"role": "assistant", "content": message.get("content")}
        )
        if not calls:
            return {"answer": message.get("content"), "planner": "model", "turns": turn}
        for call in calls:
            output = await _tool_for_model(run, call["function"])
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": output})
    raise RuntimeError(f"the model asked for tools {MAX_MODEL_TURNS} times without answering")


async def _tool_for_model(run: Run, function: dict[str, Any]) -> str:
    """One tool call the model asked for, as the JSON text it reads back (errors included)."""
    try:
        arguments = json.loads(function.get("arguments") or "{}")
        output = await run.call_tool(function["name"], **arguments)
    except (StepFailed, ApprovalRejected, LookupError, TypeError, ValueError) as exc:
        return json.dumps({"error": str(exc)})
    return json.dumps(output)


def build_agent(**settings: Any) -> Agent:
    """The tool agent: its two tools and its run handler. `settings` go to `Agent(...)`."""
    agent = Agent(**settings)
    agent.tool(calculate)
    agent.tool(destructive=True)(write_file)

    @agent.run
    async def handle(run: Run) -> dict[str, Any]:
        if os.environ.get(MODEL_URL):
            return await ask_model(run, agent)
        return await follow_plan(run)

    return agent


if __name__ == "__main__":
    print(f"tool-agent: work directory {work_dir()}", flush=True)
    build_agent().serve()
    sys.exit(0)

"""`Run`: what a handler gets — the run's input and state, and journaled steps."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar, cast, overload

from agentos_sdk._core.approvals import Decision, ask
from agentos_sdk._core.errors import (
    ApprovalRejected,
    GatewayError,
    NonDeterminismError,
    StepFailed,
)
from agentos_sdk._core.gateway import GatewayClient
from agentos_sdk._core.journal import Journal
from agentos_sdk._core.models import CHAT, EMBEDDINGS
from agentos_sdk._core.protocol import (
    JSON,
    Delivery,
    ErrorBody,
    StepReport,
    StepType,
    UsageBody,
    now,
    parse_rfc3339,
    rfc3339,
)
from agentos_sdk._core.tools import Tool, ToolRegistry
from agentos_sdk._core.usage import Usage

T = TypeVar("T")
_parent_call: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "agentos_sdk_parent_call", default=None
)


class Run:
    """One delivery of a run to this agent.

    Attributes: `name` (the run id), `agent`, `tenant`, `attempt` (1-based; > 1 after a
    redelivery), `input` (any JSON), `labels`, `deadline` (aware datetime, UTC),
    `timeout_seconds`, `traceparent` (W3C, or None), `state` (the last checkpoint's state,
    None on a fresh run). `cancelled` turns True when the run is canceled, passes its
    deadline or ends elsewhere; the handler then sees asyncio.CancelledError.
    """

    def __init__(self, delivery: Delivery, gateway: GatewayClient, tools: ToolRegistry) -> None:
        body = delivery["run"]
        self.name: str = body["name"]
        self.agent: str = body.get("agent", "")
        self.tenant: str = body.get("tenant", "")
        self.attempt: int = int(body.get("attempt", 1))
        # Any, not JSON: handlers index into their input, and a union would not let them.
        self.input: Any = body.get("input")
        self.labels: dict[str, str] = dict(body.get("labels") or {})
        self.timeout_seconds: int = int(body.get("timeoutSeconds") or 0)
        self.deadline: datetime = parse_rfc3339(body["deadline"])
        self.traceparent: str | None = body.get("traceparent")
        # The agent's spec.runs.approval: which tool calls ask a human first.
        self.approval_policy: str = body.get("approval") or "none"
        self._journal = Journal(delivery.get("journal"))
        self.state: Any = self._journal.state
        self.cancel_reason: str | None = None
        self._gateway = gateway
        self._tools = tools

    @property
    def cancelled(self) -> bool:
        """True once the run was canceled, timed out, or ended elsewhere, or the agent is
        stopping without it (`cancel_reason` is then `"canceled"`, `"deadline"`,
        `"finished"` or `"abandoned"`)."""
        return self.cancel_reason is not None

    @overload
    async def step(
        self,
        name: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        type: StepType = "custom",
        key: str | None = None,
        **kwargs: Any,
    ) -> T: ...

    @overload
    async def step(
        self,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        type: StepType = "custom",
        key: str | None = None,
        **kwargs: Any,
    ) -> T: ...

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        type: StepType = "custom",
        key: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run `fn(*args, **kwargs)` once per run and journal it as step `name`.

        `fn` may be a coroutine function (awaited) or a plain function (run in a worker
        thread, so heartbeats go on). Its result must be JSON; the step returns it as it
        reads back from JSON (a tuple comes back a list), on this attempt and on every later
        one, where the recorded output is returned without calling `fn`. Steps inside `fn`
        are its children (callId `"<this>.<n>"`).

        Raises StepFailed when `fn` raises (now, or as recorded by an earlier attempt),
        NonDeterminismError when the journal recorded another step at this callId, ValueError
        for a malformed `key`, GatewayError when the step cannot be recorded.
        """
        recorded_input = {"args": list(args), "kwargs": kwargs}
        return await self._journaled(
            name, type, key, recorded_input, lambda: _call(fn, args, kwargs)
        )

    async def call_tool(self, tool: Tool | str | Callable[..., Any], **arguments: Any) -> Any:
        """Call a registered tool (by Tool, name or function) as a `tool` step named after it.

        The step's input is `arguments`. Raises LookupError for an unknown tool, and what
        `step` raises.
        """
        found = self._tools.resolve(tool)
        if not _gated(self.approval_policy, found.destructive):
            return await self._journaled(
                found.name, "tool", None, arguments, lambda: _call(found.fn, (), arguments)
            )
        # Gated: ask a human for this very step (its callId), then run what they approved.
        call_id = self._journal.next_call_id(_parent_call.get(), None)
        described = _describe(arguments)
        done, output = self._journal.replay(call_id, found.name, "tool", described)
        if done:
            return output
        await self._report_divergence(call_id, found.name, "tool", described)
        decision = await self._ask(call_id, found.name, _describe(arguments), None)
        if not decision.approved:
            raise ApprovalRejected(
                found.name,
                decision.approval_id,
                decision.state,
                decision.comment,
                decision.decided_by,
            )
        approved = decision.arguments
        gate: dict[str, Any] = {"approvalId": decision.approval_id, "destructive": True}
        return await self._journaled(
            found.name,
            "tool",
            None,
            approved,
            lambda: _call(found.fn, (), approved),
            call_id=call_id,
            gate=gate,
        )

    async def request_approval(
        self,
        action: str,
        details: Mapping[str, Any] | None = None,
        timeout_seconds: float | None = None,
        *,
        key: str | None = None,
    ) -> Decision:
        """Ask a human whether to do `action` (with `details`, JSON) and wait for the answer;
        the run is `InputRequired` meanwhile (architecture/approvals.md).

        Journaled like a step (callId: the next ordinal, or `key`): a later attempt of the
        run gets the same decision without asking again. `timeout_seconds`: the approval
        expires then (a rejection); never later than the run's deadline. Returns the
        Decision (`approved`, `arguments` with the decider's edits, `comment`); a rejection
        or an expiry is a Decision too, not an exception. Raises GatewayError when the
        gateway refuses the request.
        """
        call_id = self._journal.next_call_id(_parent_call.get(), key)
        return await self._ask(call_id, action, _describe(dict(details or {})), timeout_seconds)

    async def _report_divergence(
        self, call_id: str, name: str, step_type: StepType, step_input: JSON
    ) -> None:
        """Tell the control plane that this replay left its origin at `call_id` (once)."""
        recorded, self._journal.divergence = self._journal.divergence, None
        if recorded is None:
            return
        body: JSON = {
            "callId": call_id,
            "recorded": {
                "type": recorded["type"],
                "name": recorded["name"],
                "input": recorded["input"],
            },
            "actual": {"type": step_type, "name": name, "input": step_input},
            "attempt": self.attempt,
        }
        await self._gateway.report_divergence(self.name, body)

    async def _ask(
        self, call_id: str, action: str, details: JSON, timeout_s: float | None
    ) -> Decision:
        asked: dict[str, JSON] = details if isinstance(details, dict) else {"value": details}
        return await ask(self._gateway, self.name, self.attempt, call_id, action, asked, timeout_s)

    async def chat(
        self,
        call: Callable[..., Any] | None = None,
        /,
        *,
        model: str,
        messages: list[dict[str, Any]],
        key: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """One model call as an `llm` step named `model`, with its token usage.

        Without `call`: through the agent gateway's model proxy (the tenant's provider for
        `model`; the gateway holds its credential and records the step, with cost, under
        this step's callId), e.g. `await run.chat(model="gpt-4o-mini", messages=[...],
        temperature=0)`. With `call`: `call(model=..., messages=..., **params)` (sync or
        async) makes the request and returns an OpenAI-compatible chat completion (a dict,
        or an object with `model_dump()` such as the openai package's); its `usage` is
        recorded. Returns the completion as a dict; on a later attempt, the recorded one.
        Raises ModelRateLimited (429: rate limit or token budget, `retry_after_s`),
        GatewayError, and what `step` raises.
        """
        request = {"model": model, "messages": messages, **params}
        if call is None:
            output = await self._proxied(model, key, request)
        else:
            fn = call

            async def complete() -> Any:
                response = await _call(fn, (), request)
                return response.model_dump() if hasattr(response, "model_dump") else response

            output = await self._journaled(model, "llm", key, request, complete, _usage_of)
        if not isinstance(output, dict):
            raise TypeError(f"the model call returned {output!r}, not a chat completion")
        return output

    async def chat_stream(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        key: str | None = None,
        **params: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """A streamed model call through the gateway: the `chat.completion.chunk` objects as
        they arrive (the last one carries `usage`). The gateway records the `llm` step when
        the stream ends; on a later attempt the recorded completion comes back as one
        chunk. Raises what `chat` raises."""
        request = {"model": model, "messages": messages, **params, "stream": True}
        call_id, parent = self._journal.next_call_id(_parent_call.get(), key), _parent_call.get()
        # The gateway records the request as the step's input: a replay compares it.
        done, recorded = self._journal.replay(call_id, model, "llm", request)
        if done:
            yield _as_chunk(recorded)
            return
        async for chunk in self._gateway.models.stream(
            CHAT, request, self._model_headers(call_id, parent)
        ):
            yield chunk
        self._journal.last_call_id = call_id

    async def embeddings(self, *, model: str, input: str | list[Any], **params: Any) -> Any:
        """Embeddings through the gateway (metered as an `llm` step of this run, not
        journaled: each call is made). Returns the OpenAI answer (`data`, `usage`). Raises
        ModelRateLimited, GatewayError."""
        body = {"model": model, "input": input, **params}
        return await self._gateway.models.call(EMBEDDINGS, body, self._model_headers(None, None))

    def _model_headers(self, call_id: str | None, parent: str | None) -> dict[str, str]:
        headers = {"AgentOS-Run": self.name, "AgentOS-Attempt": str(self.attempt)}
        if call_id is not None:
            headers["AgentOS-Call-Id"] = call_id
        if parent is not None:
            headers["AgentOS-Parent-Call-Id"] = parent
        return headers

    async def _proxied(self, model: str, key: str | None, request: dict[str, Any]) -> JSON:
        parent = _parent_call.get()
        call_id = self._journal.next_call_id(parent, key)
        # The gateway records the request as the step's input: a replay compares it.
        done, output = self._journal.replay(call_id, model, "llm", request)
        if done:
            return output
        answer = await self._gateway.models.call(
            CHAT, request, self._model_headers(call_id, parent)
        )
        self._journal.last_call_id = call_id
        return cast(JSON, answer)

    async def checkpoint(self, state: JSON) -> None:
        """Save `state` (JSON); the next attempt of this run starts with `run.state == state`.

        Raises TypeError/ValueError when `state` is not JSON, GatewayError when it cannot
        be saved.
        """
        state = json.loads(json.dumps(state, allow_nan=False))
        await self._gateway.checkpoint(self.name, state, self._journal.last_call_id, self.attempt)
        self.state = state

    async def _journaled(
        self,
        name: str,
        step_type: StepType,
        key: str | None,
        recorded_input: Mapping[str, Any],
        thunk: Callable[[], Awaitable[Any]],
        usage_of: Callable[[JSON], UsageBody | None] | None = None,
        *,
        call_id: str | None = None,
        gate: Mapping[str, Any] | None = None,
    ) -> JSON:
        parent = _parent_call.get()
        if call_id is None:  # else: taken, and looked up in the journal, by the caller
            call_id = self._journal.next_call_id(parent, key)
            described = _describe(recorded_input)
            done, output = self._journal.replay(call_id, name, step_type, described)
            if done:
                return output
            await self._report_divergence(call_id, name, step_type, described)
        started = now()
        error: ErrorBody | None = None
        cause: BaseException | None = None
        token = _parent_call.set(call_id)
        try:
            output = json.loads(json.dumps(await thunk(), allow_nan=False))
        except (NonDeterminismError, GatewayError):
            raise  # not the step's failure: nothing is recorded, the run fails or retries
        except StepFailed as exc:
            error, cause = {"type": exc.error_type, "message": exc.message}, exc
        except Exception as exc:
            error, cause = {"type": type(exc).__name__, "message": str(exc)}, exc
        finally:
            _parent_call.reset(token)
        report: StepReport = {
            "callId": call_id,
            "type": step_type,
            "name": name,
            "input": _describe(recorded_input),
            "status": "failed" if error else "succeeded",
            "output": None if error else output,
            "error": error,
            "usage": usage_of(output) if usage_of and not error else None,
            "startedAt": rfc3339(started),
            "endedAt": rfc3339(now()),
            "attempt": self.attempt,
            "parentCallId": parent,
        }
        if gate:
            report.update(gate)  # type: ignore[typeddict-item]
        await self._gateway.record_step(self.name, report)
        if error:
            raise StepFailed(name, call_id, error["type"], error["message"]) from cause
        self._journal.last_call_id = call_id
        return output


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)
    return await result if inspect.isawaitable(result) else result


def _describe(value: Any) -> JSON:
    """`value` as JSON, with `repr` for what JSON cannot hold (a step's input is for reading)."""
    return cast(JSON, json.loads(json.dumps(value, default=repr)))


def _as_chunk(completion: JSON) -> dict[str, Any]:
    """A recorded completion as the one chunk a replayed stream yields."""
    body = completion if isinstance(completion, dict) else {}
    choices = body.get("choices")
    return {
        "id": body.get("id"),
        "object": "chat.completion.chunk",
        "model": body.get("model"),
        "choices": [
            {
                "index": c.get("index", 0),
                "delta": c.get("message") or {},
                "finish_reason": c.get("finish_reason"),
            }
            for c in (choices if isinstance(choices, list) else [])
            if isinstance(c, dict)
        ],
        "usage": body.get("usage"),
    }


def _gated(policy: str, destructive: bool) -> bool:
    """Whether a tool call asks a human first under `spec.runs.approval` = `policy`."""
    return policy == "all" or (policy == "destructive" and destructive)


def _usage_of(output: JSON) -> UsageBody | None:
    usage = Usage.from_openai(output) if isinstance(output, dict) else None
    return usage.as_body() if usage else None

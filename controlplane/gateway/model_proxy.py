"""The agent gateway's OpenAI-compatible model proxy (architecture/model-gateway.md):
`POST /v1/chat/completions` (with `stream: true` as Server-Sent Events, passed through
chunk by chunk) and `POST /v1/embeddings`.

The caller is a sandbox (`Authorization: Bearer $AGENTOS_AGENT_TOKEN`, the SDK's credential);
the call is attributed to a Running run of its agent (`AgentOS-Run`, `AgentOS-Attempt`, else
its only Running run), admitted by the provider's limits, sent upstream with the provider's
credential, and recorded as an `llm` step (`AgentOS-Call-Id` names it, as the SDK's
journal does; else `llm-<random>`) with the upstream's `usage`, latency, time to first
token and cost. Upstream answers other than 2xx are passed through and recorded nowhere.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse

from controlplane.domain.agents.model import refuse_unstorable
from controlplane.domain.errors import BadRequest, FieldError, Unauthenticated, ValidationFailed
from controlplane.domain.events.envelope import rfc3339, utcnow
from controlplane.domain.providers.metering import priced, usage_of
from controlplane.domain.providers.model import ProviderRecord
from controlplane.domain.runs.model import Usage
from controlplane.domain.runs.steps import CALL_ID_PATTERN, Step
from controlplane.gateway.metering import Meter
from controlplane.gateway.sse import StreamTap
from controlplane.gateway.upstream import Upstream
from controlplane.service.model_calls import RunRef
from controlplane.service.run_execution import AgentIdentity

_CALL_ID = re.compile(CALL_ID_PATTERN)
router = APIRouter(prefix="/v1", tags=["models"])


class ModelProxy:
    """What the proxy's routes share: the meter and the upstream client."""

    def __init__(self, meter: Meter, upstream: Upstream) -> None:
        self.meter = meter
        self.upstream = upstream

    async def aclose(self) -> None:
        """Finish the recordings in flight, then close the upstream connections."""
        await self.meter.drain()
        await self.upstream.aclose()


@dataclass(frozen=True)
class Call:
    """One admitted model call: who, for which run, to which provider, named how."""

    who: AgentIdentity
    run: RunRef
    provider: ProviderRecord
    window: int
    call_id: str
    parent_call_id: str | None
    model: str
    request: dict[str, Any]
    started: datetime
    started_s: float


def _proxy(request: Request) -> ModelProxy:
    proxy: ModelProxy = request.app.state.gateway.models
    return proxy


async def _caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> AgentIdentity:
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Unauthenticated("a sandbox credential is required (Authorization: Bearer ...)")
    who: AgentIdentity = await request.app.state.gateway.credentials.authenticate(secret.strip())
    return who


Caller = Annotated[AgentIdentity, Depends(_caller)]


def _invalid(pointer: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{pointer}: {message}", errors=[FieldError(pointer, message)])


def parse_request(raw: bytes, operation: str) -> dict[str, Any]:
    """The JSON body of a chat completion (`operation` "chat": `model`, non-empty
    `messages`, `stream` a boolean if given) or embeddings request (`model`, `input`).
    Raises ValidationFailed naming the field (RFC 6901 pointer), BadRequest for a body that
    is not JSON or holds what cannot be stored."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise _invalid("", "the body must be a JSON object")
    refuse_unstorable(body)
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > 200:
        raise _invalid("/model", "required: the model's name (1-200 characters)")
    if operation == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _invalid("/messages", "required: a non-empty array of messages")
        if not isinstance(body.get("stream", False), bool):
            raise _invalid("/stream", "must be a boolean")
    elif not isinstance(body.get("input"), str | list) or not body.get("input"):
        raise _invalid("/input", "required: a string or a non-empty array")
    return body


def _header_int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise BadRequest(f"{name}: {value!r} is not a delivery number (1, 2, ...)")
    return int(value)


def _call_id(value: str | None, name: str) -> str | None:
    if value is not None and not _CALL_ID.match(value):
        raise BadRequest(f"{name}: {value!r} is not a callId ({CALL_ID_PATTERN})")
    return value


async def _admit(request: Request, who: AgentIdentity, body: dict[str, Any]) -> Call:
    """Attribute and admit the call. Raises what `Meter.attribute`, `provider_for` and
    `admit` raise, BadRequest for a malformed AgentOS-* header."""
    headers = request.headers
    meter = _proxy(request).meter
    attempt = _header_int(headers.get("agentos-attempt"), "AgentOS-Attempt")
    call_id = _call_id(headers.get("agentos-call-id"), "AgentOS-Call-Id")
    parent = _call_id(headers.get("agentos-parent-call-id"), "AgentOS-Parent-Call-Id")
    run = await meter.attribute(who, headers.get("agentos-run"), attempt)
    provider = await meter.provider_for(who.tenant, body["model"])
    now_s = time.time()
    window = await meter.admit(provider, now_s)
    return Call(
        who,
        run,
        provider,
        window,
        call_id or f"llm-{uuid.uuid4().hex}",
        parent,
        body["model"],
        body,
        utcnow(),
        time.perf_counter(),
    )


def _step(call: Call, output: Any, usage: Usage | None, extra: dict[str, Any]) -> Step:
    """The `llm` step of a finished call: tokens from the upstream, cost from the
    provider's pricing; `output` carries the gateway's own figures under `agentos`."""
    latency_ms = round((time.perf_counter() - call.started_s) * 1000, 3)
    metered = priced(usage or Usage(), call.provider.spec.pricing)
    recorded = dict(output) if isinstance(output, dict) else {"value": output}
    recorded["agentos"] = {
        "provider": call.provider.name,
        "latencyMs": latency_ms,
        "costUsd": metered.costUsd,
        **extra,
    }
    return Step(
        callId=call.call_id,
        type="llm",
        name=call.model,
        input=call.request,
        status="succeeded",
        output=recorded,
        usage=metered,
        startedAt=rfc3339(call.started),
        endedAt=rfc3339(utcnow()),
        attempt=call.run.attempt,
        parentCallId=call.parent_call_id,
    )


def _passthrough(upstream: httpx.Response, content: bytes, call_id: str) -> Response:
    return Response(
        content,
        status_code=upstream.status_code,
        media_type=upstream.headers.get("content-type", "application/json"),
        headers={"AgentOS-Call-Id": call_id},
    )


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request, who: Caller) -> Response:
    """An OpenAI chat completion, proxied and metered; `stream: true` answers
    `text/event-stream`, the upstream's chunks as they come."""
    raw = await request.body()
    body = parse_request(raw, "chat")
    call = await _admit(request, who, body)
    if body.get("stream"):
        return await _stream(request, call, body)
    return await _unary(request, call, raw, "/chat/completions", "chat")


@router.post("/embeddings", response_model=None)
async def embeddings(request: Request, who: Caller) -> Response:
    """OpenAI embeddings, proxied and metered (the step keeps the usage, not the vectors)."""
    raw = await request.body()
    body = parse_request(raw, "embeddings")
    call = await _admit(request, who, body)
    return await _unary(request, call, raw, "/embeddings", "embeddings")


async def _unary(request: Request, call: Call, raw: bytes, path: str, operation: str) -> Response:
    proxy = _proxy(request)
    spec, name = call.provider.spec, call.provider.name
    upstream = await proxy.upstream.send(
        proxy.upstream.build(spec, name, path, raw), name, stream=False
    )
    content = upstream.content
    if upstream.is_success:
        try:
            answer = json.loads(content)
        except ValueError:
            answer = None
        answer = answer if isinstance(answer, dict) else {}
        output = answer if operation == "chat" else _without_vectors(answer)
        step = _step(call, output, usage_of(answer), {"stream": False})
        proxy.meter.record(call.run, step, call.provider, call.window, operation)
    return _passthrough(upstream, content, call.call_id)


def _without_vectors(answer: dict[str, Any]) -> dict[str, Any]:
    data = answer.get("data")
    return {
        "object": answer.get("object"),
        "model": answer.get("model"),
        "embeddings": len(data) if isinstance(data, list) else 0,
        "usage": answer.get("usage"),
    }


async def _stream(request: Request, call: Call, body: dict[str, Any]) -> Response:
    proxy = _proxy(request)
    options = body.get("stream_options")
    asked = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    raw = json.dumps({**body, "stream_options": asked}, separators=(",", ":")).encode()
    spec, name = call.provider.spec, call.provider.name
    upstream = await proxy.upstream.send(
        proxy.upstream.build(spec, name, "/chat/completions", raw), name, stream=True
    )
    if not upstream.is_success:
        content = await upstream.aread()
        await upstream.aclose()
        return _passthrough(upstream, content, call.call_id)
    tap = StreamTap(call.started_s)

    async def relay() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for chunk in upstream.aiter_raw():
                tap.feed(chunk)
                yield chunk
            finished = True
        finally:
            await upstream.aclose()
            extra = {"stream": True, "timeToFirstTokenMs": tap.first_token_ms}
            if not finished:
                extra["interrupted"] = True
            step = _step(call, tap.completion(), tap.usage, extra)
            proxy.meter.record(call.run, step, call.provider, call.window, "chat")

    return StreamingResponse(
        relay(),
        status_code=upstream.status_code,
        media_type="text/event-stream",
        headers={"AgentOS-Call-Id": call.call_id, "Cache-Control": "no-cache"},
    )

"""The A2A methods of one agent, each a translation onto the run use cases of
`service.runs` (architecture/a2a.md): no business rule lives here.

    SendMessage              create_run, idempotent by `messageId` (the Idempotency-Key
                             machinery, key `a2a:<messageId>`); waits for a final state
                             unless `configuration.returnImmediately`
    SendStreamingMessage     create_run, then the run's events as StreamResponses
    GetTask / ListTasks      get_run / list_runs of this agent
    CancelTask               cancel_run
    SubscribeToTask          the run's events from now on
    Create/GetTaskPushNotificationConfig   the run's notification (format `a2a`)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controlplane.api.a2a import tasks
from controlplane.api.a2a.jsonrpc import TASK_NOT_FOUND, UNSUPPORTED_OPERATION, A2AError
from controlplane.domain.access import Principal, Role
from controlplane.domain.errors import AgentBusy, BadRequest
from controlplane.domain.runs.lifecycle import is_terminal
from controlplane.domain.runs.model import RunRecord
from controlplane.service import run_notifications as notifications
from controlplane.service import runs as svc
from controlplane.service.idempotency import IdempotencyRequest, request_hash

if TYPE_CHECKING:
    from controlplane.config import Settings
    from controlplane.data.unit_of_work import UnitOfWork

MAX_PAGE = 100
PUSH_CONFIG_ID = "default"  # one config per task


@dataclass(frozen=True)
class Call:
    """One A2A call: who (`principal`), to which agent, and how to open a UnitOfWork."""

    tenant: str
    agent: str
    principal: Principal
    uow: Callable[[str], UnitOfWork]
    settings: Settings
    authorize: Callable[[Role], None]

    def reader(self) -> UnitOfWork:
        return self.uow("system")

    def writer(self) -> UnitOfWork:
        self.authorize(Role.EDITOR)
        return self.uow(self.principal.audit_name)


def _task_id(params: dict[str, Any], key: str = "id") -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key}: the task id (a string)")
    return value


async def _create(call: Call, params: dict[str, Any]) -> RunRecord | dict[str, Any]:
    """The run of a message (a new one, or the one the same messageId made), or a rejected
    task when admission refuses it."""
    message = params.get("message")
    if isinstance(message, dict) and message.get("taskId"):
        raise A2AError(
            UNSUPPORTED_OPERATION,
            "continuing a task is not supported: each message is a new run "
            "(approvals are decided through the REST API)",
        )
    body = tasks.run_create(message)
    message_id = body["labels"][tasks.MESSAGE_LABEL]
    idempotency = IdempotencyRequest(
        tenant=call.tenant,
        principal=call.principal.name,
        key=f"a2a:{message_id}",
        request_hash=request_hash(f"A2A SendMessage {call.tenant}/{call.agent}", message),
        retention_s=call.settings.idempotency_retention_s,
    )
    try:
        async with call.writer() as uow:
            created = await svc.create_run(
                uow, call.tenant, call.agent, body, idempotency=idempotency
            )
    except AgentBusy as exc:
        return tasks.rejected_task(body["labels"][tasks.CONTEXT_LABEL], exc.detail)
    push = (params.get("configuration") or {}).get("taskPushNotificationConfig")
    if isinstance(push, dict) and created.record is not None:
        await _set_push(call, created.record.name, push)
    if created.record is not None:
        return created.record
    async with call.reader() as uow:
        return await svc.get_run(
            uow, call.tenant, created.body["metadata"]["name"], agent=call.agent
        )


def _follow(call: Call, name: str, after: int) -> AsyncIterator[svc.RunEvent | None]:
    deadline = time.monotonic() + call.settings.watch_max_timeout_s

    async def wait() -> bool:
        await asyncio.sleep(call.settings.watch_poll_interval_s)
        return time.monotonic() < deadline

    return svc.follow_run_events(
        call.reader, call.tenant, name, agent=call.agent, after_sequence=after, wait=wait
    )


async def send_message(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    """SendMessage → `{"task": Task}`."""
    made = await _create(call, params)
    if isinstance(made, dict):
        return {"task": made}
    configuration = params.get("configuration") or {}
    run = made.to_object()
    if not configuration.get("returnImmediately"):
        async for event in _follow(call, made.name, 0):
            if event is not None and event.data.get("run", {}).get("status"):
                run = event.data["run"]
                if tasks.is_final(tasks.task_status(run)["state"]):
                    break
    return {"task": tasks.task(run)}


async def _updates(call: Call, name: str, after: int, sent: str) -> AsyncIterator[dict[str, Any]]:
    """StreamResponses for the run's events after sequence `after`: a `statusUpdate` each
    time the task state changes from `sent`, the `artifactUpdate` before a completed one;
    until a final state."""
    async for event in _follow(call, name, after):
        if event is None:
            continue
        run = event.data.get("run", {})
        if "status" not in run:  # a step's event: the task state did not change
            continue
        state = tasks.task_status(run)["state"]
        if state == sent:
            continue
        sent = state
        if run["status"]["phase"] == "Succeeded":
            yield tasks.artifact_update(run)
        yield tasks.status_update(run)
        if tasks.is_final(state):
            return


async def send_streaming_message(
    call: Call, params: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """SendStreamingMessage → the Task, then its updates until a final state."""
    made = await _create(call, params)
    if isinstance(made, dict):
        yield {"task": made}
        return
    first = tasks.task(made.to_object())
    yield {"task": first}
    if tasks.is_final(first["status"]["state"]):
        return
    async for update in _updates(call, made.name, 0, first["status"]["state"]):
        yield update


async def _last_sequence(call: Call, name: str) -> int:
    after = 0
    while True:
        async with call.reader() as uow:
            _, events = await svc.run_events(
                uow, call.tenant, name, agent=call.agent, after_sequence=after
            )
        if not events:
            return after
        after = events[-1].sequence


async def subscribe_to_task(call: Call, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """SubscribeToTask → the Task as it is, then its updates until a final state; a task
    that has ended answers UnsupportedOperation (A2A: no subscription to a terminal task)."""
    name = _task_id(params)
    after = await _last_sequence(call, name)
    async with call.reader() as uow:
        record = await svc.get_run(uow, call.tenant, name, agent=call.agent)
    if is_terminal(record.phase):
        raise A2AError(UNSUPPORTED_OPERATION, f"task {name!r} has ended ({record.phase})")
    now = tasks.task(record.to_object())
    yield {"task": now}
    async for update in _updates(call, name, after, now["status"]["state"]):
        yield update


async def get_task(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    """GetTask → Task (`historyLength` 0 leaves the history out)."""
    async with call.reader() as uow:
        record = await svc.get_run(uow, call.tenant, _task_id(params), agent=call.agent)
    return tasks.task(record.to_object(), history=params.get("historyLength") != 0)


def _page_size(params: dict[str, Any]) -> int:
    size = params.get("pageSize") or 50
    if not isinstance(size, int) or not 1 <= size <= MAX_PAGE:
        raise BadRequest(f"pageSize: 1..{MAX_PAGE}")
    return size


async def list_tasks(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    """ListTasks → `{tasks, nextPageToken, pageSize, totalSize}`: the agent's runs, newest
    first, filtered by `contextId` (the run label) and `status`; `totalSize` is the size of
    this page (counting every match would cost a scan)."""
    status = params.get("status")
    phases = [str(p) for p in tasks.phases_of(status)] if status else []
    context = params.get("contextId")
    selector = f"{tasks.CONTEXT_LABEL}={context}" if context else None
    size = _page_size(params)
    async with call.reader() as uow:
        page = await svc.list_runs(
            uow,
            call.tenant,
            agent=call.agent,
            phases=phases,
            label_selector=selector,
            limit=size,
            continue_token=params.get("pageToken") or None,
        )
    found = [
        tasks.task(r.to_object(), history=bool(params.get("historyLength"))) for r in page.items
    ]
    if status:
        found = [t for t in found if t["status"]["state"] == status]
    if not params.get("includeArtifacts"):
        for item in found:
            item.pop("artifacts", None)
    return {
        "tasks": found,
        "nextPageToken": page.continue_token or "",
        "pageSize": size,
        "totalSize": len(found),
    }


async def cancel_task(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    """CancelTask → the Task, canceled; TaskNotCancelable (-32002) for one that has ended."""
    async with call.writer() as uow:
        record = await svc.cancel_run(uow, call.tenant, _task_id(params), agent=call.agent)
    return tasks.task(record.to_object())


def _push_config(params: dict[str, Any], task_id: str) -> dict[str, Any]:
    """A TaskPushNotificationConfig as answered: its token is the caller's and not shown."""
    return {"id": PUSH_CONFIG_ID, "taskId": task_id, "url": params.get("url", "")}


async def _set_push(call: Call, task_id: str, config: dict[str, Any]) -> None:
    url, token = config.get("url"), config.get("token") or None
    if not isinstance(url, str) or (token is not None and not isinstance(token, str)):
        raise BadRequest("url: a string; token: a string when given")
    async with call.writer() as uow:
        await notifications.set_notification(
            uow, call.tenant, task_id, url, agent=call.agent, format="a2a", token=token
        )


async def create_push_config(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    """CreateTaskPushNotificationConfig → the config. The task's end is POSTed to `url` as a
    StreamResponse `statusUpdate` with `X-A2A-Notification-Token: <token>`; one config per
    task (a second replaces the first)."""
    task_id = _task_id(params, "taskId")
    await _set_push(call, task_id, params)
    return _push_config(params, task_id)


async def get_push_config(call: Call, params: dict[str, Any]) -> dict[str, Any]:
    """GetTaskPushNotificationConfig → the task's config; TaskNotFound without one."""
    task_id = _task_id(params, "taskId")
    async with call.reader() as uow:
        record = await svc.get_run(uow, call.tenant, task_id, agent=call.agent)
        url = await uow.notifications.url_of(record.id, "a2a")
    if url is None:
        raise A2AError(TASK_NOT_FOUND, f"task {task_id!r} has no push notification config")
    return _push_config({"url": url}, task_id)


UNARY = {
    "SendMessage": send_message,
    "CreateTaskPushNotificationConfig": create_push_config,
    "GetTaskPushNotificationConfig": get_push_config,
    "GetTask": get_task,
    "ListTasks": list_tasks,
    "CancelTask": cancel_task,
}
STREAMING = {
    "SendStreamingMessage": send_streaming_message,
    "SubscribeToTask": subscribe_to_task,
}

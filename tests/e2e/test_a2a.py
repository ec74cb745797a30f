"""A2A end to end (architecture/a2a.md): the official A2A Python client (`a2a-sdk`) against a
real `agentos serve` on PostgreSQL and NATS, agents on the SDK in process sandboxes
(tests/agents/counting_agent.py). Task states must match the runs' phases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError, TaskNotCancelableError, TaskNotFoundError
from google.protobuf import json_format, struct_pb2

from harness.waiting import wait_until
from tests.e2e.runs_plane import Plane, started_plane, tenant_name

pytestmark = [pytest.mark.postgres, pytest.mark.nats]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, plane_database: str) -> Iterator[Plane]:
    with started_plane(tmp_path_factory.mktemp("a2a"), plane_database) as control:
        yield control


def _message(data: dict[str, Any], message_id: str | None = None) -> SendMessageRequest:
    value = struct_pb2.Value()
    json_format.ParseDict(data, value)
    message = Message(
        message_id=message_id or str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(data=value)]
    )
    return SendMessageRequest(message=message)


async def _client(plane: Plane, tenant: str, agent: str, *, streaming: bool = True) -> Any:
    http = httpx.AsyncClient(headers=dict(plane.http.headers), timeout=60)
    card = await A2ACardResolver(http, f"{plane.base}/a2a/{tenant}/{agent}").get_agent_card()
    config = ClientConfig(streaming=streaming, httpx_client=http)
    return card, ClientFactory(config).create(card)


def _states(events: list[StreamResponse]) -> list[TaskState]:
    out: list[TaskState] = []
    for event in events:
        if event.HasField("task"):
            out.append(event.task.status.state)
        elif event.HasField("status_update"):
            out.append(event.status_update.status.state)
    return out


async def test_the_client_discovers_the_card_and_streams_a_run_to_completion(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "talker")
    card, client = await _client(plane, tenant, "talker")
    assert card.name == "talker"
    assert card.capabilities.streaming
    assert card.supported_interfaces[0].url == f"{plane.base}/a2a/{tenant}/talker"
    assert card.supported_interfaces[0].protocol_binding == "JSONRPC"
    assert "bearerToken" in card.security_schemes
    assert card.security_schemes["bearerToken"].http_auth_security_scheme.scheme == "Bearer"
    assert [s.id for s in card.skills] == ["talker"]

    events = [e async for e in client.send_message(_message({"steps": 2}))]
    states = _states(events)
    assert states[0] == TaskState.TASK_STATE_SUBMITTED
    assert TaskState.TASK_STATE_WORKING in states
    assert states[-1] == TaskState.TASK_STATE_COMPLETED
    [artifact] = [e.artifact_update.artifact for e in events if e.HasField("artifact_update")]
    output = json_format.MessageToDict(artifact.parts[0].data)
    task_id = events[0].task.id
    run = plane.run(tenant, task_id)
    assert run["status"]["phase"] == "Succeeded"
    assert output == run["status"]["output"] == {"steps": 2, "attempt": 1}

    got = await client.get_task(GetTaskRequest(id=task_id))
    assert got.status.state == TaskState.TASK_STATE_COMPLETED
    assert json_format.MessageToDict(got.artifacts[0].parts[0].data) == output
    await client.close()


async def test_the_same_message_id_twice_makes_one_run(plane: Plane) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "once")
    _, client = await _client(plane, tenant, "once", streaming=False)
    message_id = str(uuid.uuid4())
    first = [e async for e in client.send_message(_message({"steps": 1}, message_id))]
    second = [e async for e in client.send_message(_message({"steps": 1}, message_id))]
    assert first[0].task.id == second[0].task.id
    assert first[0].task.status.state == TaskState.TASK_STATE_COMPLETED, "blocking send"
    listed = plane.http.get(f"/api/v1/tenants/{tenant}/runs").json()["items"]
    assert [r["metadata"]["name"] for r in listed] == [first[0].task.id]
    tasks = await client.list_tasks(ListTasksRequest(context_id=first[0].task.context_id))
    assert [t.id for t in tasks.tasks] == [first[0].task.id]
    await client.close()


async def test_a_task_is_canceled_and_its_run_with_it(plane: Plane) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "slow")
    _, client = await _client(plane, tenant, "slow", streaming=False)
    request = _message({"steps": 1, "sleep": 60})
    request.configuration.return_immediately = True
    [sent] = [e async for e in client.send_message(request)]
    task_id = sent.task.id
    assert sent.task.status.state == TaskState.TASK_STATE_SUBMITTED
    wait_until(lambda: plane.run(tenant, task_id)["status"]["phase"] == "Running", 60, "running")
    working = await client.get_task(GetTaskRequest(id=task_id))
    assert working.status.state == TaskState.TASK_STATE_WORKING

    _, streaming = await _client(plane, tenant, "slow")
    updates = streaming.subscribe(SubscribeToTaskRequest(id=task_id))
    first = await anext(updates)
    assert first.task.status.state == TaskState.TASK_STATE_WORKING

    canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
    assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    rest = [e async for e in updates]
    assert _states(rest) == [TaskState.TASK_STATE_CANCELED]
    assert plane.run(tenant, task_id)["status"]["phase"] == "Canceled"
    with pytest.raises(TaskNotCancelableError):
        await client.cancel_task(CancelTaskRequest(id=task_id))
    with pytest.raises(TaskNotFoundError):
        await client.get_task(GetTaskRequest(id="run-missing"))
    await client.close()
    await streaming.close()


async def test_a_push_notification_config_is_kept_and_refused_for_a_loopback_url(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "pusher")
    _, client = await _client(plane, tenant, "pusher", streaming=False)
    request = _message({"steps": 1, "sleep": 30})
    request.configuration.return_immediately = True
    [sent] = [e async for e in client.send_message(request)]
    task_id = sent.task.id
    with pytest.raises(InvalidParamsError):
        await client.create_task_push_notification_config(
            TaskPushNotificationConfig(task_id=task_id, url="http://127.0.0.1:9/hook")
        )
    url = "https://hooks.invalid/a2a"
    made = await client.create_task_push_notification_config(
        TaskPushNotificationConfig(task_id=task_id, url=url, token="client-token")
    )
    assert (made.task_id, made.url, made.token) == (task_id, url, "")
    got = await client.get_task_push_notification_config(
        GetTaskPushNotificationConfigRequest(task_id=task_id, id=made.id)
    )
    assert got.url == url
    await client.cancel_task(CancelTaskRequest(id=task_id))
    await client.close()


def test_a_viewer_reads_the_card_but_cannot_send_and_another_tenant_is_not_found(
    plane: Plane,
) -> None:
    tenant = tenant_name()
    plane.apply_agent(tenant, "guarded")
    made = plane.http.post(
        f"/api/v1/tenants/{tenant}/tokens", json={"principal": "watcher", "role": "viewer"}
    )
    assert made.status_code == 201, made.text
    viewer = {"Authorization": f"Bearer {made.json()['token']}"}
    base = f"{plane.base}/a2a/{tenant}/guarded"
    assert httpx.get(f"{base}/.well-known/agent-card.json", headers=viewer).status_code == 200
    assert httpx.get(f"{base}/.well-known/agent-card.json").status_code == 401
    send = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"message": {"messageId": "m-1", "role": "ROLE_USER", "parts": [{"text": "x"}]}},
    }
    refused = httpx.post(base, json=send, headers=viewer)
    assert refused.status_code == 403 and refused.json()["code"] == "PERMISSION_DENIED"
    other = httpx.post(f"{plane.base}/a2a/{tenant_name()}/guarded", json=send, headers=viewer)
    assert other.status_code == 404 and other.json()["code"] == "TENANT_NOT_FOUND"
    unknown = httpx.post(base, json={**send, "method": "Nope"}, headers=viewer).json()
    assert unknown["error"]["code"] == -32601

"""The Kubernetes test services from `make services` work: kube-apiserver (on etcd) and KWOK.

The apiserver is real (built from k8s.io/kubernetes); no controller manager, scheduler or
kubelet runs, so KWOK plays the kubelet for fake nodes. Every object made here has a name
unique to the run and is deleted afterwards.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from harness import kube as kc
from harness.waiting import wait_until
from tests.conftest import service_setting

pytestmark = pytest.mark.kube

SERVICE = "Kubernetes (kube-apiserver, etcd, KWOK)"
NAMESPACE = "default"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


def ignore_not_found(call: Callable[[], Any]) -> None:
    try:
        call()
    except ApiException as e:
        if e.status != 404:
            raise


@pytest.fixture(scope="module")
def kubeconfig() -> str:
    return service_setting("KUBECONFIG", SERVICE)


@pytest.fixture(scope="module")
def kubectl() -> str:
    return service_setting("AGENTOS_KUBECTL", SERVICE)


@pytest.fixture(scope="module")
def api(kubeconfig: str) -> Iterator[client.ApiClient]:
    server = service_setting("AGENTOS_KUBE_APISERVER", SERVICE)
    api_client = config.new_client_from_config(config_file=kubeconfig)
    # Never run these tests against some other cluster a stray KUBECONFIG points at.
    if api_client.configuration.host.rstrip("/") != server.rstrip("/"):
        pytest.fail(
            f"{kubeconfig} points at {api_client.configuration.host}, not the test "
            f"apiserver {server}; run `make services`",
            pytrace=False,
        )
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:10]


def test_custom_resource_round_trip(
    api: client.ApiClient, kubectl: str, kubeconfig: str, suffix: str
) -> None:
    ext = client.ApiextensionsV1Api(api)
    objects = client.CustomObjectsApi(api)
    group = f"t{suffix}.test.agentos.io"
    crd_name = f"widgets.{group}"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 1},
                                        "colour": {"type": "string"},
                                    },
                                    "required": ["size"],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:

        def established() -> bool:
            got = ext.read_custom_resource_definition(crd_name)
            return any(
                c.type == "Established" and c.status == "True"
                for c in (got.status.conditions or [])
            )

        wait_until(established, 30, f"CRD {crd_name} to be Established")

        name = f"widget-{suffix}"
        objects.create_namespaced_custom_object(
            group,
            "v1",
            NAMESPACE,
            "widgets",
            {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": name, "labels": {"agentos.io/test": suffix}},
                "spec": {"size": 3, "colour": "teal"},
            },
        )

        listed = objects.list_namespaced_custom_object(group, "v1", NAMESPACE, "widgets")
        by_name = {item["metadata"]["name"]: item for item in listed["items"]}
        assert name in by_name
        assert by_name[name]["spec"] == {"size": 3, "colour": "teal"}

        out = subprocess.run(
            [kubectl, "--kubeconfig", kubeconfig, "get", crd_name, "-n", NAMESPACE, "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        items = json.loads(out.stdout)["items"]
        assert [(i["metadata"]["name"], i["spec"]["size"]) for i in items] == [(name, 3)]

        # The schema is enforced by the real apiserver.
        with pytest.raises(ApiException) as bad:
            objects.create_namespaced_custom_object(
                group,
                "v1",
                NAMESPACE,
                "widgets",
                {
                    "apiVersion": f"{group}/v1",
                    "kind": "Widget",
                    "metadata": {"name": f"bad-{suffix}"},
                    "spec": {"size": 0},
                },
            )
        assert bad.value.status == 422
    finally:
        # Deleting the CRD deletes its objects (the apiserver's own finalizer).
        ignore_not_found(lambda: ext.delete_custom_resource_definition(crd_name))


def test_kwok_runs_fake_node_and_pod(api: client.ApiClient, suffix: str) -> None:
    core = client.CoreV1Api(api)
    node_name = f"kwok-node-{suffix}"
    pod_name = f"kwok-pod-{suffix}"
    sa_name = f"kwok-test-{suffix}"
    capacity = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node_name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "agentos.io/test": suffix,
            },
        },
        "spec": {"taints": [{"key": KWOK_ANNOTATION, "value": "fake", "effect": "NoSchedule"}]},
        "status": {"capacity": capacity, "allocatable": capacity},
    }
    # No controller manager runs, so nothing makes a namespace's "default" ServiceAccount;
    # the ServiceAccount admission plugin requires the pod's account to exist.
    service_account = {"metadata": {"name": sa_name}}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "labels": {"agentos.io/test": suffix}},
        "spec": {
            "nodeName": node_name,
            "serviceAccountName": sa_name,
            "automountServiceAccountToken": False,
            "tolerations": [{"key": KWOK_ANNOTATION, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "agent", "image": "registry.invalid/agentos/fake:1"}],
        },
    }

    core.create_node(node)
    try:
        core.create_namespaced_service_account(NAMESPACE, service_account)
        core.create_namespaced_pod(NAMESPACE, pod)

        def node_ready() -> bool:
            got = core.read_node_status(node_name)
            return any(
                c.type == "Ready" and c.status == "True" for c in (got.status.conditions or [])
            )

        wait_until(node_ready, 60, f"KWOK to make node {node_name} Ready")

        def pod_running() -> client.V1Pod | None:
            got = core.read_namespaced_pod_status(pod_name, NAMESPACE)
            return got if got.status.phase == "Running" else None

        running = wait_until(pod_running, 60, f"KWOK to make pod {pod_name} Running")
        assert running.spec.node_name == node_name
        assert running.status.pod_ip
        statuses = running.status.container_statuses or []
        assert [(s.name, s.ready) for s in statuses] == [("agent", True)]
    finally:
        ignore_not_found(
            lambda: core.delete_namespaced_pod(pod_name, NAMESPACE, grace_period_seconds=0)
        )
        ignore_not_found(lambda: core.delete_namespaced_service_account(sa_name, NAMESPACE))
        ignore_not_found(lambda: core.delete_node(node_name))


def test_rbac_is_enforced_for_service_account_tokens(api: client.ApiClient, suffix: str) -> None:
    """A ServiceAccount token (TokenRequest) authenticates; RBAC decides what it may do."""
    core = client.CoreV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    sa_name = f"rbac-test-{suffix}"
    role_name = f"pod-reader-{suffix}"
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": sa_name}})
    try:
        token = core.create_namespaced_service_account_token(
            sa_name, NAMESPACE, {"spec": {"expirationSeconds": 600}}
        ).status.token
        assert token

        sa_config = client.Configuration()
        sa_config.host = api.configuration.host
        sa_config.ssl_ca_cert = api.configuration.ssl_ca_cert
        sa_config.api_key = {"authorization": f"Bearer {token}"}
        with client.ApiClient(sa_config) as sa_api:
            as_sa = client.CoreV1Api(sa_api)
            with pytest.raises(ApiException) as denied:
                as_sa.list_namespaced_pod(NAMESPACE)
            assert denied.value.status == 403
            assert f"system:serviceaccount:{NAMESPACE}:{sa_name}" in denied.value.body

            rbac.create_namespaced_role(
                NAMESPACE,
                {
                    "metadata": {"name": role_name},
                    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
                },
            )
            rbac.create_namespaced_role_binding(
                NAMESPACE,
                {
                    "metadata": {"name": role_name},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": role_name,
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}
                    ],
                },
            )

            def allowed() -> bool:
                try:
                    as_sa.list_namespaced_pod(NAMESPACE)
                except ApiException as e:
                    if e.status != 403:
                        raise
                    return False
                return True

            # The authorizer reads roles from its informer cache: poll, with a deadline.
            wait_until(allowed, 30, f"RBAC to let {sa_name} list pods")
            with pytest.raises(ApiException) as still_denied:
                as_sa.list_namespaced_secret(NAMESPACE)
            assert still_denied.value.status == 403
    finally:
        ignore_not_found(lambda: rbac.delete_namespaced_role_binding(role_name, NAMESPACE))
        ignore_not_found(lambda: rbac.delete_namespaced_role(role_name, NAMESPACE))
        ignore_not_found(lambda: core.delete_namespaced_service_account(sa_name, NAMESPACE))


def test_a_namespace_is_deleted_with_its_objects_even_those_held_by_a_finalizer() -> None:
    """No controller-manager runs, so kube_cluster.delete_namespace does its namespace
    controller's work (the teardown of every test that makes a namespace relies on it)."""
    name = kc.tenant_namespace("ns-delete")
    try:
        kc.apply_objects(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"held-{i}",
                    "namespace": name,
                    "finalizers": ["agentos.io/finalizer"],
                },
            }
            for i in range(3)
        )
    finally:
        kc.delete_namespace(name, timeout_s=60)
    assert kc.kubectl("get", "namespace", name, check=False).returncode != 0

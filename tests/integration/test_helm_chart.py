"""The Helm chart charts/agentos and the kustomize base generated from it.

What is checked: `helm lint --strict`; `helm template` with the default values and with
values-production.yaml; the rendered objects (processes, hardening, Secrets by reference only,
RBAC equal to deploy/rbac, the FlowSchema equal to deploy/flowschema.yaml, selectors that
select, probes on ports that exist); every rendered object applied to the real test
kube-apiserver with a server-side dry run (the apiserver validates each one, strict field
validation, and stores none); the chart's copies of the CRD, Prometheus rules and dashboards
against deploy/; the PrometheusRules under `promtool check rules`; the kustomize base equal to
the chart's output; the README's install commands run as written.

The Prometheus Operator's CRDs are not on the test apiserver, so the server-side dry run
renders with serviceMonitor and prometheusRule off; the rules those objects carry are checked
by promtool instead, and the ServiceMonitor's selector against the rendered Services.

helm, kubectl and promtool come from `make services` (hack/build-k8s-tools.sh, Debian's
prometheus); missing, these tests fail, they never skip. Namespaced objects go to the
namespace `agentos-chart-test`, created for real once (a server-side dry run needs it); the
only objects stored are it and the two placeholder Secrets of the README's commands, and
the namespace is deleted with them at the end of the module.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import kube as kc
from tests.conftest import service_setting

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "agentos"
PRODUCTION = CHART / "values-production.yaml"
BASE = ROOT / "deploy" / "kustomize" / "base"
VERSION = (ROOT / "VERSION").read_text().strip()
IMAGE = f"ghcr.io/agentos/agentos:{VERSION}"
NAMESPACE = "agentos-chart-test"
SERVICE = "Kubernetes (kube-apiserver, kubectl, helm)"
COMPONENTS = ("api", "controller", "relay", "gateway", "operator")
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
Object = dict[str, Any]


# --- tools ----------------------------------------------------------------------------------


def tool(key: str) -> str:
    path = service_setting(key, SERVICE)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{key}={path} is not an executable: run `make services`", pytrace=False)
    return path


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: run `make services` (installs Debian's prometheus)",
            pytrace=False,
        )
    return path


def run(
    *cmd: str, stdin: str | None = None, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=env,
    )


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return run(tool("AGENTOS_HELM"), *args)


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run(
        tool("AGENTOS_KUBECTL"),
        "--kubeconfig",
        service_setting("KUBECONFIG", SERVICE),
        *args,
        stdin=stdin,
    )


def template(*args: str, release: str = "agentos", namespace: str = NAMESPACE) -> str:
    """`helm template` of the chart; the YAML stream, or the test fails with helm's error."""
    done = helm("template", release, str(CHART), "--namespace", namespace, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def objects(stream: str) -> list[Object]:
    return [doc for doc in yaml.safe_load_all(stream) if doc]


def dry_run_apply(stream: str) -> subprocess.CompletedProcess[str]:
    """Apply with a server-side dry run: admission and validation (unknown fields are errors)
    run in the apiserver, nothing is stored. --force-conflicts: cluster-scoped objects of the
    same names may already be there, applied by other tests."""
    return kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=agentos-chart-test",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        stdin=stream,
    )


# --- rendered objects -----------------------------------------------------------------------


def by_kind(objs: list[Object], kind: str) -> dict[str, Object]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def workloads(objs: list[Object]) -> dict[str, Object]:
    """Deployments and the Job, by their component label."""
    return {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o
        for o in objs
        if o["kind"] in ("Deployment", "Job")
    }


def pod_spec(workload: Object) -> Object:
    spec: Object = workload["spec"]["template"]["spec"]
    return spec


def env_of(container: Object) -> dict[str, Object]:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def default_objects() -> list[Object]:
    return objects(template())


@pytest.fixture(scope="module")
def production_objects() -> list[Object]:
    return objects(template("-f", str(PRODUCTION)))


@pytest.fixture(scope="module", params=["default", "production"])
def rendered(request: pytest.FixtureRequest) -> list[Object]:
    objs: list[Object] = request.getfixturevalue(f"{request.param}_objects")
    return objs


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    """The test namespace, created for real; deleted with what is in it at the end (no
    controller-manager runs, so kube_cluster.delete_namespace finalizes it)."""
    server = service_setting("AGENTOS_KUBE_APISERVER", SERVICE)
    shown = kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
    # Never apply anything to some other cluster a stray KUBECONFIG points at.
    assert shown.stdout.rstrip("/") == server.rstrip("/"), (shown.stdout, shown.stderr)
    created = kubectl("create", "namespace", NAMESPACE)
    assert created.returncode == 0 or "AlreadyExists" in created.stderr, created.stderr
    yield NAMESPACE
    kc.delete_namespace(NAMESPACE)


# --- the chart's copies of deploy/ ----------------------------------------------------------


def test_the_chart_crd_is_the_one_in_deploy_crds() -> None:
    chart_crds = sorted(p.name for p in (CHART / "crds").iterdir())
    deploy_crds = sorted(p.name for p in (ROOT / "deploy" / "crds").iterdir())
    assert chart_crds == deploy_crds, "run `make chart-files`"
    for name in deploy_crds:
        assert (CHART / "crds" / name).read_bytes() == (
            ROOT / "deploy" / "crds" / name
        ).read_bytes(), f"charts/agentos/crds/{name} differs from deploy/crds: make chart-files"


@pytest.mark.parametrize(
    ("chart_dir", "deploy_dir", "pattern"),
    [
        ("files/prometheus", "deploy/prometheus/rules", "*.rules.yml"),
        ("files/grafana", "deploy/grafana", "*.json"),
    ],
)
def test_the_chart_rules_and_dashboards_are_those_of_deploy(
    chart_dir: str, deploy_dir: str, pattern: str
) -> None:
    chart_files = {p.name: p.read_bytes() for p in (CHART / chart_dir).glob(pattern)}
    deploy_files = {p.name: p.read_bytes() for p in (ROOT / deploy_dir).glob(pattern)}
    assert deploy_files, f"nothing in {deploy_dir}"
    assert chart_files == deploy_files, f"charts/agentos/{chart_dir} differs: make chart-files"


def test_chart_version_and_app_version_are_the_repository_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == VERSION
    assert chart["appVersion"] == VERSION


# --- lint and schema ------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], ["-f", str(PRODUCTION)]], ids=["default", "production"])
def test_helm_lint_strict_passes(values: list[str]) -> None:
    linted = helm("lint", "--strict", str(CHART), *values)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "0 chart(s) failed" in linted.stdout


@pytest.mark.parametrize(
    ("setting", "error_at"),
    [
        ("database.existingSecret=", "/database/existingSecret"),
        ("nats.existingSecret=", "/nats/existingSecret"),
        ("database.secretKey=", "/database/secretKey"),
        ("nats=null", "nats"),
        # A URL (and its password) is never taken inline.
        ("database.url=postgresql+asyncpg://agentos:secret@db:5432/agentos", "/database"),
        ("nats.url=nats://nats:4222", "/nats"),
        # A misspelt key fails instead of being ignored.
        ("api.replica=3", "/api"),
        ("securityContext.readOnlyRootFilesystem=false", "/securityContext"),
        ("flowSchema.enable=false", "/flowSchema"),
    ],
)
def test_the_values_schema_refuses(setting: str, error_at: str) -> None:
    done = helm("template", "agentos", str(CHART), "--set", setting)
    assert done.returncode != 0, f"{setting} was accepted"
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
    assert error_at in done.stderr, done.stderr


# --- what is rendered -----------------------------------------------------------------------


DEFAULT_OBJECTS = {
    ("Deployment", "agentos-api"),
    ("Deployment", "agentos-controller"),
    ("Deployment", "agentos-relay"),
    ("Deployment", "agentos-gateway"),
    ("Deployment", "agentos-operator"),
    ("Job", "agentos-db-upgrade"),
    ("Service", "agentos-api"),
    ("Service", "agentos-controller"),
    ("Service", "agentos-relay"),
    ("Service", "agentos-gateway"),
    ("Service", "agentos-operator"),
    ("ServiceAccount", "agentos-controller"),
    ("ServiceAccount", "agentos-operator"),
    ("ClusterRole", "agentos-controller"),
    ("ClusterRole", "agentos-operator"),
    ("ClusterRoleBinding", "agentos-controller"),
    ("ClusterRoleBinding", "agentos-operator"),
    ("Role", "agentos-operator-lease"),
    ("RoleBinding", "agentos-operator-lease"),
    ("RuntimeClass", "gvisor"),
    ("RuntimeClass", "runc"),
    ("FlowSchema", "agentos"),
    ("NetworkPolicy", "agentos-default-deny-ingress"),
    ("NetworkPolicy", "agentos-api"),
    ("NetworkPolicy", "agentos-gateway"),
    ("NetworkPolicy", "agentos-metrics"),
    ("PodDisruptionBudget", "agentos-api"),
    ("PodDisruptionBudget", "agentos-relay"),
    ("PodDisruptionBudget", "agentos-gateway"),
    ("PodDisruptionBudget", "agentos-operator"),
    ("ConfigMap", "agentos-dashboard-agents"),
    ("ConfigMap", "agentos-dashboard-api"),
    ("ConfigMap", "agentos-dashboard-outbox"),
    ("ConfigMap", "agentos-dashboard-runs"),
    ("ConfigMap", "agentos-dashboard-slo"),
}
MONITORING_OBJECTS = {
    ("ServiceMonitor", "agentos"),
    ("PrometheusRule", "agentos-alerts"),
    ("PrometheusRule", "agentos-slo"),
}


def test_the_default_values_render_every_part_and_no_prometheus_operator_object(
    default_objects: list[Object],
) -> None:
    assert {(o["kind"], o["metadata"]["name"]) for o in default_objects} == DEFAULT_OBJECTS


def test_the_production_values_add_the_service_monitor_and_rules(
    production_objects: list[Object],
) -> None:
    assert {(o["kind"], o["metadata"]["name"]) for o in production_objects} == (
        DEFAULT_OBJECTS | MONITORING_OBJECTS
    )


def test_namespaced_objects_are_in_the_release_namespace(rendered: list[Object]) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "RuntimeClass", "FlowSchema"}
    for o in rendered:
        expected = None if o["kind"] in cluster_scoped else NAMESPACE
        assert o["metadata"].get("namespace") == expected, (o["kind"], o["metadata"]["name"])


def test_each_process_runs_its_command_from_the_one_image(rendered: list[Object]) -> None:
    expected = {
        "api": (["serve"], "api"),
        "controller": (["serve"], "controller"),
        "relay": (["serve"], "relay"),
        "gateway": (["serve"], "gateway"),
        "operator": (["operator"], None),
        "db-upgrade": (["db", "upgrade"], None),
    }
    found = workloads(rendered)
    assert set(found) == set(expected)
    for component, (args, components) in expected.items():
        (container,) = pod_spec(found[component])["containers"]
        assert container["image"] == IMAGE
        assert container["command"] == ["agentos"]
        assert container["args"] == args, component
        env = env_of(container)
        assert env.get("AGENTOS_COMPONENTS", {}).get("value") == components, component
        if args == ["serve"]:
            # The default listen address, 127.0.0.1, is unreachable from outside the pod.
            assert env["AGENTOS_HOST"]["value"] == "0.0.0.0"
            assert env["AGENTOS_PORT"]["value"] == "8080"
    controller_env = env_of(pod_spec(found["controller"])["containers"][0])
    assert controller_env["AGENTOS_RUNTIME"]["value"] == "kubernetes"
    api_env = env_of(pod_spec(found["api"])["containers"][0])
    assert api_env["AGENTOS_GRPC_PORT"]["value"] == "8090"


def test_the_operator_finds_its_namespace_and_lease(rendered: list[Object]) -> None:
    operator = workloads(rendered)["operator"]
    env = env_of(pod_spec(operator)["containers"][0])
    assert env["AGENTOS_OPERATOR_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert env["AGENTOS_OPERATOR_LEASE"]["value"] == "agentos-operator"


@pytest.mark.parametrize("values_file", ["values.yaml", "values-production.yaml"])
def test_urls_come_only_from_the_named_secrets(values_file: str) -> None:
    values = yaml.safe_load((CHART / values_file).read_text())
    rendered = objects(template("-f", str(CHART / values_file)))
    refs = {
        "AGENTOS_DATABASE_URL": (
            values["database"]["existingSecret"],
            values["database"]["secretKey"],
        ),
        "AGENTOS_NATS_URL": (values["nats"]["existingSecret"], values["nats"]["secretKey"]),
    }
    # The controller needs NATS too: with it, Ready waits for the agent's events to be
    # published. The API and the operator only open the database.
    needs = {
        "api": {"AGENTOS_DATABASE_URL"},
        "controller": {"AGENTOS_DATABASE_URL", "AGENTOS_NATS_URL"},
        "relay": {"AGENTOS_DATABASE_URL", "AGENTOS_NATS_URL"},
        "gateway": {"AGENTOS_DATABASE_URL", "AGENTOS_NATS_URL"},
        "operator": {"AGENTOS_DATABASE_URL"},
        "db-upgrade": {"AGENTOS_DATABASE_URL"},
    }
    assert not [o for o in rendered if o["kind"] == "Secret"], "the chart makes no Secret"
    for component, workload in workloads(rendered).items():
        env = env_of(pod_spec(workload)["containers"][0])
        assert {name for name in env if name in refs} == needs[component], component
        for name in needs[component]:
            assert "value" not in env[name], f"{component}: {name} inline"
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == refs[name], component


def test_every_pod_is_hardened_and_has_resources(rendered: list[Object]) -> None:
    for component, workload in workloads(rendered).items():
        spec = pod_spec(workload)
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, component
        assert pod_security["runAsUser"] == 65532, component
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, component
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, component
            assert security["readOnlyRootFilesystem"] is True, component
            assert security["capabilities"] == {"drop": ["ALL"]}, component
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{component}: /tmp is not writable"
            resources = container["resources"]
            assert set(resources["requests"]) >= {"cpu", "memory"}, component
            assert set(resources["limits"]) >= {"cpu", "memory"}, component


def test_only_the_controller_and_the_operator_get_a_kubernetes_token(
    rendered: list[Object],
) -> None:
    found = workloads(rendered)
    for component in ("api", "relay", "gateway", "db-upgrade"):
        spec = pod_spec(found[component])
        assert spec["automountServiceAccountToken"] is False, component
        assert "serviceAccountName" not in spec, component
    accounts = by_kind(rendered, "ServiceAccount")
    for component in ("controller", "operator"):
        spec = pod_spec(found[component])
        assert spec["serviceAccountName"] == f"agentos-{component}"
        assert spec["automountServiceAccountToken"] is True
        assert f"agentos-{component}" in accounts


def test_the_controller_is_one_replica_replaced_not_rolled(rendered: list[Object]) -> None:
    controller = workloads(rendered)["controller"]
    assert controller["spec"]["replicas"] == 1
    assert controller["spec"]["strategy"] == {"type": "Recreate"}


def test_the_production_values_scale_api_relay_and_operator(
    production_objects: list[Object],
) -> None:
    found = workloads(production_objects)
    replicas = {c: found[c]["spec"]["replicas"] for c in COMPONENTS}
    assert replicas == {"api": 3, "controller": 1, "relay": 2, "gateway": 2, "operator": 2}


def test_probes_ask_the_right_paths_on_ports_that_exist(rendered: list[Object]) -> None:
    expected = {  # component -> (port number of `http`, liveness path, readiness path, probed)
        "api": (8080, "/healthz", "/readyz", "http"),
        "controller": (8080, "/healthz", "/healthz", "http"),
        "relay": (8080, "/healthz", "/healthz", "http"),
        # The gateway's own /healthz, on the port agents use (serve's metrics port answers
        # 200 on any path while the process lives, gateway or not).
        "gateway": (8080, "/healthz", "/healthz", "gateway"),
        "operator": (8081, "/healthz", "/readyz", "http"),
    }
    found = workloads(rendered)
    for component, (port, liveness, readiness, probed) in expected.items():
        (container,) = pod_spec(found[component])["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == port, component
        assert probed in ports, component
        assert container["livenessProbe"]["httpGet"] == {"path": liveness, "port": probed}
        assert container["readinessProbe"]["httpGet"] == {"path": readiness, "port": probed}


def test_db_upgrade_runs_once_before_install_and_upgrade(rendered: list[Object]) -> None:
    job = workloads(rendered)["db-upgrade"]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    assert pod_spec(job)["restartPolicy"] == "Never"


def _deploy_rbac(component: str) -> dict[tuple[str, str], Object]:
    docs = objects((ROOT / "deploy" / "rbac" / f"{component}.yaml").read_text())
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.mark.parametrize("component", ["controller", "operator"])
def test_rbac_is_that_of_deploy_rbac_in_the_release_namespace(
    rendered: list[Object], component: str
) -> None:
    chart = {
        (o["kind"], o["metadata"]["name"]): o
        for o in rendered
        if o["kind"]
        in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    }
    deploy = _deploy_rbac(component)
    assert set(chart) == set(deploy)
    for key, want in deploy.items():
        got = chart[key]
        for field in ("rules", "roleRef", "automountServiceAccountToken"):
            assert got.get(field) == want.get(field), (key, field)
        if "subjects" in want:
            expected = [dict(s, namespace=NAMESPACE) for s in want["subjects"]]
            assert got["subjects"] == expected, key


def test_another_release_prefixes_its_cluster_objects_and_keeps_the_lease_consistent() -> None:
    objs = objects(template(release="blue"))
    assert set(by_kind(objs, "ClusterRole")) == {"blue-agentos-controller", "blue-agentos-operator"}
    operator = workloads(objs)["operator"]
    lease = env_of(pod_spec(operator)["containers"][0])["AGENTOS_OPERATOR_LEASE"]["value"]
    assert lease == "blue-agentos-operator"
    role = by_kind(objs, "Role")["blue-agentos-operator-lease"]
    assert [r.get("resourceNames") for r in role["rules"]] == [None, [lease]]
    assert pod_spec(operator)["serviceAccountName"] == "blue-agentos-operator"


def test_runtime_classes_are_those_of_deploy(rendered: list[Object]) -> None:
    deploy = objects((ROOT / "deploy" / "runtimeclasses.yaml").read_text())
    want = {(d["metadata"]["name"], d["handler"]) for d in deploy}
    got = {(o["metadata"]["name"], o["handler"]) for o in rendered if o["kind"] == "RuntimeClass"}
    assert got == want


def _flow_schema_subjects(namespace: str, prefix: str = "agentos") -> list[Object]:
    return [
        {
            "kind": "ServiceAccount",
            "serviceAccount": {"name": f"{prefix}-{c}", "namespace": namespace},
        }
        for c in ("operator", "controller")
    ]


def test_the_flow_schema_is_that_of_deploy_for_the_release_service_accounts(
    rendered: list[Object],
) -> None:
    """deploy/flowschema.yaml's priority level, precedence and rules; its subjects are the
    release's ServiceAccounts in the release namespace, its name the release's; off, none."""
    (deploy,) = objects((ROOT / "deploy" / "flowschema.yaml").read_text())
    (got,) = by_kind(rendered, "FlowSchema").values()
    assert got["apiVersion"] == deploy["apiVersion"]
    assert got["metadata"]["name"] == deploy["metadata"]["name"] == "agentos"
    want = copy.deepcopy(deploy["spec"])
    for rule in want["rules"]:
        for subject in rule["subjects"]:
            subject["serviceAccount"]["namespace"] = NAMESPACE
    assert got["spec"] == want
    assert got["spec"]["priorityLevelConfiguration"] == {"name": "workload-high"}
    (rule,) = got["spec"]["rules"]
    assert rule["subjects"] == _flow_schema_subjects(NAMESPACE)
    accounts = by_kind(rendered, "ServiceAccount")
    assert {s["serviceAccount"]["name"] for s in rule["subjects"]} <= set(accounts)

    blue = by_kind(objects(template(release="blue", namespace="blue-ns")), "FlowSchema")
    assert set(blue) == {"blue-agentos"}
    (blue_rule,) = blue["blue-agentos"]["spec"]["rules"]
    assert blue_rule["subjects"] == _flow_schema_subjects("blue-ns", prefix="blue-agentos")
    assert not by_kind(objects(template("--set", "flowSchema.enabled=false")), "FlowSchema")


def _pod_labels(rendered: list[Object]) -> dict[str, dict[str, str]]:
    return {c: w["spec"]["template"]["metadata"]["labels"] for c, w in workloads(rendered).items()}


def test_each_service_selects_one_component_and_targets_its_named_ports(
    rendered: list[Object],
) -> None:
    pods = _pod_labels(rendered)
    found = workloads(rendered)
    for name, service in by_kind(rendered, "Service").items():
        chosen = [c for c, labels in pods.items() if selects(service["spec"]["selector"], labels)]
        assert chosen == [name.removeprefix("agentos-")], name
        (container,) = pod_spec(found[chosen[0]])["containers"]
        port_names = {p["name"] for p in container["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names, name


def test_disruption_budgets_cover_api_relay_and_operator(rendered: list[Object]) -> None:
    pods = _pod_labels(rendered)
    covered = {}
    for name, pdb in by_kind(rendered, "PodDisruptionBudget").items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        chosen = [c for c, labels in pods.items() if selects(selector, labels)]
        assert len(chosen) == 1, name
        covered[chosen[0]] = pdb["spec"]["maxUnavailable"]
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", name
    assert covered == {"api": 1, "relay": 1, "gateway": 1, "operator": 1}


def test_network_policies_deny_ingress_but_to_the_api_and_metrics(
    default_objects: list[Object],
) -> None:
    pods = _pod_labels(default_objects)
    policies = by_kind(default_objects, "NetworkPolicy")
    deny = policies["agentos-default-deny-ingress"]["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    assert all(selects(deny["podSelector"]["matchLabels"], labels) for labels in pods.values())

    api = policies["agentos-api"]["spec"]
    assert [
        c for c, labels in pods.items() if selects(api["podSelector"]["matchLabels"], labels)
    ] == ["api"]
    (rule,) = api["ingress"]
    assert {p["port"] for p in rule["ports"]} == {"http", "grpc"}
    assert "from" not in rule, "the API is open to any peer by default"

    metrics = policies["agentos-metrics"]["spec"]
    (rule,) = metrics["ingress"]
    assert [p["port"] for p in rule["ports"]] == ["http"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    # The named port exists on every process that serves /metrics.
    for component in COMPONENTS:
        (container,) = pod_spec(workloads(default_objects)[component])["containers"]
        assert "http" in {p["name"] for p in container["ports"]}, component


AGENT_NAMESPACES = "networkPolicy.agents.namespaces={tenant-a,tenant-b}"
POLICY = "agentos-agents"


def by_kind_all(objs: list[Object], kind: str) -> list[Object]:
    """Every object of `kind` (by_kind keys by name: the agent policies share one)."""
    return [o for o in objs if o["kind"] == kind]


def chosen(selector: Object, pods: dict[str, dict[str, str]]) -> list[str]:
    """The components whose pod labels a LabelSelector's matchLabels select."""
    return [c for c, labels in pods.items() if selects(selector["matchLabels"], labels)]


def test_only_the_gateway_deployment_runs_the_gateway_behind_its_service(
    rendered: list[Object],
) -> None:
    found = workloads(rendered)
    for component, workload in found.items():
        env = env_of(pod_spec(workload)["containers"][0])
        served = env.get("AGENTOS_COMPONENTS", {}).get("value", "")
        assert ("gateway" in served.split(",")) == (component == "gateway"), component
    (container,) = pod_spec(found["gateway"])["containers"]
    env = env_of(container)
    assert env["AGENTOS_GATEWAY_HOST"]["value"] == "0.0.0.0"
    assert env["AGENTOS_GATEWAY_PORT"]["value"] == "8091"
    assert env["AGENTOS_EGRESS_PROXY_PORT"]["value"] == "8092"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "gateway": 8091, "egress-proxy": 8092}
    service = by_kind(rendered, "Service")["agentos-gateway"]
    assert service["spec"]["type"] == "ClusterIP"
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("gateway", 8091, "gateway"),
        ("egress-proxy", 8092, "egress-proxy"),
        ("http", 8080, "http"),
    }


def test_the_controller_gives_sandboxes_the_gateway_service_by_its_cluster_name(
    rendered: list[Object],
) -> None:
    env = env_of(pod_spec(workloads(rendered)["controller"])["containers"][0])
    host = f"agentos-gateway.{NAMESPACE}.svc"
    assert env["AGENTOS_GATEWAY_URL"]["value"] == f"http://{host}:8091"
    assert env["AGENTOS_EGRESS_PROXY_URL"]["value"] == f"http://{host}:8092"
    other = objects(template("--set", "gateway.port=9001,gateway.egressProxyPort=9002"))
    env = env_of(pod_spec(workloads(other)["controller"])["containers"][0])
    assert env["AGENTOS_GATEWAY_URL"]["value"] == f"http://{host}:9001"
    assert env["AGENTOS_KUBERNETES_GATEWAY_PORTS"]["value"] == "9001,9002"


def _agent_policy_of_the_runtime(controller: Object, namespace: str) -> Object:
    """The policy the kubernetes runtime would apply in `namespace`, from the controller's
    environment as the chart renders it."""
    from controlplane.runtimes.kubernetes.network import AgentNetwork, agent_network_policy

    container = pod_spec(controller)["containers"][0]
    env = {k: v["value"] for k, v in env_of(container).items() if "value" in v}
    network = AgentNetwork.from_env(env)
    assert network is not None, "the controller applies no policy"
    return agent_network_policy(namespace, network)


@pytest.mark.parametrize("dns", [False, True], ids=["no-dns", "dns"])
def test_the_agent_policy_is_the_one_the_runtime_applies_and_selects_agents_and_gateway(
    dns: bool,
) -> None:
    from controlplane.runtimes.base import SandboxSpec
    from controlplane.runtimes.kubernetes.pods import pod_manifest

    objs = objects(
        template("--set", f"{AGENT_NAMESPACES},networkPolicy.agents.allowDNS={str(dns).lower()}")
    )
    found = workloads(objs)
    agents = [o for o in by_kind_all(objs, "NetworkPolicy") if o["metadata"]["name"] == POLICY]
    assert sorted(o["metadata"]["namespace"] for o in agents) == ["tenant-a", "tenant-b"]
    for policy in agents:
        runtime = _agent_policy_of_the_runtime(found["controller"], policy["metadata"]["namespace"])
        assert policy["spec"] == runtime["spec"]
        assert policy["metadata"]["name"] == runtime["metadata"]["name"]
    spec = agents[0]["spec"]
    pod = pod_manifest(
        SandboxSpec("tenant-a-web-1", "a1", "tenant-a", "web", "registry.example/web:1", "runc")
    )
    assert selects(spec["podSelector"]["matchLabels"], pod["metadata"]["labels"])
    pods = _pod_labels(objs)
    gateway_peer = spec["egress"][0]["to"][0]
    assert chosen(gateway_peer["podSelector"], pods) == ["gateway"]
    assert gateway_peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": NAMESPACE
    }
    (ingress,) = spec["ingress"]
    assert chosen(ingress["from"][0]["podSelector"], pods) == ["controller"]
    assert len(spec["egress"]) == (2 if dns else 1)
    # Off, the chart renders none and the controller applies none.
    off = objects(template("--set", f"{AGENT_NAMESPACES},networkPolicy.agents.enabled=false"))
    assert POLICY not in by_kind(off, "NetworkPolicy")
    env = env_of(pod_spec(workloads(off)["controller"])["containers"][0])
    assert env["AGENTOS_KUBERNETES_NETWORK_POLICY"]["value"] == "false"


def test_agent_pods_may_reach_the_gateway_ports_only(default_objects: list[Object]) -> None:
    from controlplane.runtimes.base import SandboxSpec
    from controlplane.runtimes.kubernetes.pods import pod_manifest

    pods = _pod_labels(default_objects)
    gateway = by_kind(default_objects, "NetworkPolicy")["agentos-gateway"]["spec"]
    assert chosen(gateway["podSelector"], pods) == ["gateway"]
    (rule,) = gateway["ingress"]
    assert {p["port"] for p in rule["ports"]} == {"gateway", "egress-proxy"}
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {}, "agents run in every tenant's namespace"
    agent = pod_manifest(SandboxSpec("t-web-1", "a1", "t", "web", "registry.example/w:1", "runc"))
    assert selects(peer["podSelector"]["matchLabels"], agent["metadata"]["labels"])


def test_the_service_monitor_scrapes_every_process_as_an_agentos_job(
    production_objects: list[Object],
) -> None:
    (monitor,) = by_kind(production_objects, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = by_kind(production_objects, "Service")
    scraped = {n for n, s in services.items() if selects(selector, s["metadata"]["labels"])}
    assert scraped == {f"agentos-{c}" for c in COMPONENTS}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    for name in scraped:
        assert endpoint["port"] in {p["name"] for p in services[name]["spec"]["ports"]}, name
    # deploy/prometheus's AgentOSTargetDown selects up{job=~"agentos.*"}.
    (relabel,) = endpoint["relabelings"]
    assert relabel == {
        "sourceLabels": ["__meta_kubernetes_service_label_app_kubernetes_io_component"],
        "targetLabel": "job",
        "replacement": "agentos-$1",
    }


def test_the_prometheus_rules_are_deploy_prometheus_and_pass_promtool(
    production_objects: list[Object], tmp_path: Path
) -> None:
    rules = by_kind(production_objects, "PrometheusRule")
    deploy = {
        p.name.removesuffix(".rules.yml"): p
        for p in (ROOT / "deploy" / "prometheus" / "rules").glob("*.rules.yml")
    }
    assert set(rules) == {f"agentos-{n}" for n in deploy}
    for name, source in deploy.items():
        spec = rules[f"agentos-{name}"]["spec"]
        assert spec == yaml.safe_load(source.read_text()), name
        rendered_file = tmp_path / f"{name}.rules.yml"
        rendered_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        checked = run(promtool(), "check", "rules", str(rendered_file))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "SUCCESS" in checked.stdout


def test_the_dashboards_are_configmaps_for_grafanas_sidecar(
    default_objects: list[Object],
) -> None:
    maps = {n: cm for n, cm in by_kind(default_objects, "ConfigMap").items() if "dashboard" in n}
    sources = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
    assert len(maps) == len(sources)
    for source in sources:
        cm = maps[f"agentos-dashboard-{source.stem.removeprefix('agentos-')}"]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"][source.name]) == json.loads(source.read_text())


# --- the real apiserver ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [],
        # The Prometheus Operator CRDs are not installed there (see the module docstring).
        [
            "-f",
            str(PRODUCTION),
            "--set",
            "serviceMonitor.enabled=false,prometheusRule.enabled=false",
        ],
        # The agent Pods' policy in a namespace that exists, with the DNS rule.
        [
            "--set",
            f"networkPolicy.agents.namespaces={{{NAMESPACE}}},networkPolicy.agents.allowDNS=true",
        ],
    ],
    ids=["default", "production", "agent-policy"],
)
def test_the_apiserver_accepts_every_rendered_object(namespace: str, values: list[str]) -> None:
    stream = template("--include-crds", *values, namespace=namespace)
    applied = dry_run_apply(stream)
    assert applied.returncode == 0, applied.stderr
    accepted = [line for line in applied.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(objects(stream)), applied.stdout


def test_the_dry_run_refuses_what_the_apiserver_would(
    namespace: str, default_objects: list[Object]
) -> None:
    """The check above is a real one: a field the apiserver does not know fails it."""
    broken = copy.deepcopy(by_kind(default_objects, "Deployment")["agentos-api"])
    pod_spec(broken)["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    applied = dry_run_apply(yaml.safe_dump(broken))
    assert applied.returncode != 0
    assert "paht" in applied.stderr, applied.stderr


# --- the kustomize base ---------------------------------------------------------------------


def test_the_kustomize_base_is_regenerated_from_the_chart_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "base"
    env = dict(os.environ, AGENTOS_HELM=tool("AGENTOS_HELM"))
    made = run(sys.executable, str(ROOT / "hack" / "gen-kustomize.py"), "--out", str(out), env=env)
    assert made.returncode == 0, made.stderr
    committed = {p.relative_to(BASE): p.read_bytes() for p in BASE.rglob("*") if p.is_file()}
    fresh = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert sorted(committed) == sorted(fresh), "run `make kustomize`"
    stale = [str(p) for p in fresh if fresh[p] != committed[p]]
    assert not stale, f"deploy/kustomize/base is stale ({stale}): run `make kustomize`"


def _without_helm_labels(o: Object) -> Object:
    o = copy.deepcopy(o)
    for key in HELM_ONLY_LABELS:
        o["metadata"].get("labels", {}).pop(key, None)
    return o


def _keyed(objs: list[Object]) -> dict[tuple[str, str, str, str], Object]:
    return {
        (o["apiVersion"], o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
        for o in objs
    }


def _without_kustomize_namespace(o: Object) -> Object:
    """kustomize takes flowcontrol.apiserver.k8s.io/v1 for namespaced and stamps the
    namespace on the FlowSchema; the apiserver drops it (the object is cluster-scoped)."""
    if o["kind"] == "FlowSchema":
        o = copy.deepcopy(o)
        o["metadata"].pop("namespace", None)
    return o


def test_kustomize_builds_the_objects_helm_renders() -> None:
    built = kubectl("kustomize", str(BASE))
    assert built.returncode == 0, built.stderr
    from_kustomize = _keyed([_without_kustomize_namespace(o) for o in objects(built.stdout)])
    from_helm = _keyed(
        [
            _without_helm_labels(o)
            for o in objects(template("--include-crds", namespace="agentos-system"))
        ]
    )
    assert sorted(from_kustomize) == sorted(from_helm)
    differing = [key for key in from_helm if from_helm[key] != from_kustomize[key]]
    assert not differing, differing


def _overlay(tmp_path: Path, namespace: str) -> Path:
    """A kustomize overlay of the base into `namespace`, as the README describes."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(BASE, overlay)  # kustomize takes no absolute resource paths
    (overlay / "kustomization.yaml").write_text(f"namespace: {namespace}\nresources:\n  - {base}\n")
    return overlay


def test_a_kustomize_overlay_moves_everything_to_its_namespace_and_the_apiserver_accepts_it(
    namespace: str, tmp_path: Path
) -> None:
    built = kubectl("kustomize", str(_overlay(tmp_path, namespace)))
    assert built.returncode == 0, built.stderr
    objs = objects(built.stdout)
    for binding in by_kind(objs, "ClusterRoleBinding").values():
        assert {s["namespace"] for s in binding["subjects"]} == {namespace}
    # The FlowSchema's subjects follow too (deploy/kustomize/base/kustomizeconfig.yaml).
    (rule,) = by_kind(objs, "FlowSchema")["agentos"]["spec"]["rules"]
    assert rule["subjects"] == _flow_schema_subjects(namespace)
    # And a namePrefix renames them there as it renames the ServiceAccounts.
    overlay = tmp_path / "overlay"
    (overlay / "kustomization.yaml").write_text(
        "namePrefix: blue-\n" + (overlay / "kustomization.yaml").read_text()
    )
    prefixed = kubectl("kustomize", str(overlay))
    assert prefixed.returncode == 0, prefixed.stderr
    (rule,) = by_kind(objects(prefixed.stdout), "FlowSchema")["blue-agentos"]["spec"]["rules"]
    assert rule["subjects"] == _flow_schema_subjects(namespace, prefix="blue-agentos")
    applied = dry_run_apply(built.stdout)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("(server dry run)") == len(objs)


# --- the README -----------------------------------------------------------------------------


def readme_block(marker: str) -> list[str]:
    """The commands of the ```sh block after `<!-- {marker}: ... -->` in README.md, one
    string per command (continued lines joined), comments left out."""
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- {marker}:[^>]*-->\n```sh\n(.*?)```", text, re.S)
    assert found, f"README.md has no block marked {marker}"
    joined = found.group(1).replace("\\\n", " ")
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def readme_env() -> dict[str, str]:
    """`helm` and `kubectl` on PATH, the test apiserver's KUBECONFIG."""
    tool_dirs = {str(Path(tool("AGENTOS_HELM")).parent), str(Path(tool("AGENTOS_KUBECTL")).parent)}
    return dict(
        os.environ,
        PATH=os.pathsep.join([*tool_dirs, os.environ.get("PATH", "")]),
        KUBECONFIG=service_setting("KUBECONFIG", SERVICE),
    )


def run_readme_command(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = run("bash", "-c", command, env=env)
    # A second run of the test finds the namespace and Secrets of the first: the same state.
    # (kubectl says "AlreadyExists" for a namespace, "already exists" for a Secret.)
    created_before = done.returncode != 0 and re.search("already ?exists", done.stderr, re.I)
    if command.startswith("kubectl") and " create " in command and created_before:
        return done
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


def test_the_readme_helm_install_works_as_written(namespace: str) -> None:
    """The block as written, but in the test namespace and under another release name: the
    shared apiserver already holds deploy/rbac's ClusterRoles under the default names."""
    assignment, *commands = readme_block("install-helm")
    assert assignment == "NAMESPACE=agentos-system RELEASE=agentos"
    env = dict(readme_env(), NAMESPACE=namespace, RELEASE="agentos-readme")
    outputs = [run_readme_command(command, env).stdout for command in commands]
    assert any(c.startswith("helm upgrade --install") for c in commands)
    assert all("--dry-run=server" in c for c in commands if c.startswith("helm"))
    installed = outputs[-1]
    assert "STATUS: pending-install" in installed, installed
    manifest = objects(installed.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0])
    assert {o["metadata"]["name"] for o in manifest if o["kind"] == "Deployment"} == {
        f"agentos-readme-{c}" for c in COMPONENTS
    }
    secret = kubectl("-n", namespace, "get", "secret", "agentos-database", "-o", "json")
    assert secret.returncode == 0, "the README's Secret is the one the chart names"
    # RuntimeClasses the cluster already has, made by something else, are left alone (Helm
    # would refuse to adopt them); the others are the chart's to make.
    listed = kubectl("get", "runtimeclass", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    foreign = {
        rc["metadata"]["name"]
        for rc in json.loads(listed.stdout)["items"]
        if rc["metadata"].get("annotations", {}).get("meta.helm.sh/release-name")
        != "agentos-readme"
    }
    made = {o["metadata"]["name"] for o in manifest if o["kind"] == "RuntimeClass"}
    assert made == {"gvisor", "runc"} - foreign


def test_the_readme_kustomize_apply_works_as_written(namespace: str, tmp_path: Path) -> None:
    """The block as written, the base reached through an overlay to the test namespace."""
    (command,) = readme_block("install-kustomize")
    assert "-k deploy/kustomize/base" in command and "--dry-run=server" in command
    command = command.replace("deploy/kustomize/base", str(_overlay(tmp_path, namespace)))
    done = run_readme_command(command, readme_env())
    assert "deployment.apps/agentos-api serverside-applied (server dry run)" in done.stdout

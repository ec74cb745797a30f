"""deploy/grafana: every dashboard loads, and every PromQL expression in it parses (promtool)
and reads only series the code exports or the rules in deploy/prometheus record."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.promql_names import (
    PROMETHEUS_SERIES,
    ROOT,
    exported_series,
    metric_names,
    recorded_series,
)
from tests.unit.test_prometheus_rules import promtool

DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
# Grafana's variables, as Prometheus would see them once Grafana has substituted them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$slo": ".*"}


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # inside collapsed rows


def exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_the_dashboards_of_the_design_are_there_with_unique_uids() -> None:
    titles = {load(p)["title"] for p in DASHBOARDS}
    assert titles == {
        "Agent OS / SLO overview",
        "Agent OS / Agent lifecycle",
        "Agent OS / Outbox and NATS",
        "Agent OS / API",
        "Agent OS / Runs",
    }
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_queries_prometheus_through_the_datasource_variable(path: Path) -> None:
    dashboard = load(path)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], f"{panel['title']}: no query"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_expression_names_only_exported_or_recorded_series(path: Path) -> None:
    known = exported_series() | recorded_series() | PROMETHEUS_SERIES
    for title, expr in exprs(load(path)):
        names = metric_names(expr)
        assert names, f"{title}: no series in {expr!r}"
        assert names <= known, f"{title}: unknown {names - known} in {expr!r}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_expression_parses(path: Path, tmp_path: Path) -> None:
    # promtool parses PromQL when it checks rules: one recording rule per expression.
    rules = []
    for i, (_, expr) in enumerate(exprs(load(path))):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:expr:{i}", "expr": expr})
    file = tmp_path / "dashboard.rules.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr

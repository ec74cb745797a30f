"""deploy/prometheus: the rules check and pass their unit tests under promtool, every SLO of
architecture/slos.md has its page and ticket alerts with a runbook, and the rules read only series
the
code exports.

promtool comes with Debian's `prometheus` package, which `make services` installs
(hack/services.d/50-prometheus.sh). Missing, these tests fail; they never skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.promql_names import (
    PROMETHEUS_SERIES,
    ROOT,
    RULES_DIR,
    exported_series,
    metric_names,
    recorded_series,
    rule_groups,
)

PROM_DIR = ROOT / "deploy" / "prometheus"
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.test.yml"))
SLOS = {  # slo label → (objective, SLO window), architecture/slos.md
    "agent-start-success": (0.99, "7d"),
    "agent-start-latency": (0.95, "1d"),
    "api-errors": (0.99, "1d"),
    "outbox-delivery": (0.995, "1d"),
    "consumer-ack-latency": (0.95, "1d"),
    "run-delivery-success": (0.999, "1d"),
    "run-dispatch-latency": (0.95, "1d"),
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: run `make services` (installs Debian's prometheus)",
            pytrace=False,
        )
    return path


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def alerts() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def test_the_rule_files_pass_promtool_check_rules() -> None:
    files = sorted(str(p) for p in RULES_DIR.glob("*.rules.yml"))
    assert len(files) >= 2, "recording and alerting rules"
    result = run(promtool(), "check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_unit_tests_pass_promtool_test_rules() -> None:
    assert RULE_TESTS, "deploy/prometheus/tests/*.test.yml"
    result = run(promtool(), "test", "rules", *(p.name for p in RULE_TESTS), cwd=PROM_DIR / "tests")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_every_slo_records_its_error_ratio_over_every_alert_window_and_its_objective() -> None:
    recorded: dict[str, dict[str, str]] = {}
    for group in rule_groups():
        for rule in group["rules"]:
            if "record" in rule:
                recorded.setdefault(rule["labels"]["slo"], {})[rule["record"]] = rule["expr"]
    assert set(recorded) == set(SLOS)
    for slo, (objective, window) in SLOS.items():
        names = recorded[slo]
        for w in ("5m", "30m", "1h", "6h", "3d", window):
            assert f"slo:sli_error:ratio_rate{w}" in names, (slo, w)
        assert names["slo:objective:ratio"].strip() == f"vector({objective:g})", slo
        assert f"ratio_rate{window}" in names["slo:error_budget_remaining:ratio"], slo


def test_every_slo_has_a_page_and_a_ticket_alert_at_the_workbook_burn_rates() -> None:
    by_slo: dict[str, dict[str, str]] = {}
    for rule in alerts():
        slo = rule["labels"].get("slo")
        if slo:
            by_slo.setdefault(slo, {})[rule["labels"]["severity"]] = rule["expr"]
    assert set(by_slo) == set(SLOS)
    for slo, (objective, _) in SLOS.items():
        budget = f"{1 - objective:g}"
        page, ticket = by_slo[slo]["page"], by_slo[slo]["ticket"]
        for factor, long_w, short_w in (("14.4", "1h", "5m"), ("6", "6h", "30m")):
            for w in (long_w, short_w):
                assert f'ratio_rate{w}{{slo="{slo}"}} > ({factor} * {budget})' in page, (slo, w)
        for w in ("3d", "6h"):
            assert f'ratio_rate{w}{{slo="{slo}"}} > {budget}' in ticket, (slo, w)


def test_every_alert_has_a_severity_and_a_runbook_section_that_exists() -> None:
    runbooks = (PROM_DIR / "runbooks.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in runbooks.splitlines()
        if line.startswith("## ")
    }
    for rule in alerts():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "deploy/prometheus/runbooks.md", url
        assert anchor in anchors, f"{rule['alert']}: no '## ' heading for #{anchor}"


def test_every_alert_is_exercised_by_a_rule_unit_test() -> None:
    tested: dict[str, list[list[Any]]] = {}
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                tested.setdefault(check["alertname"], []).append(check["exp_alerts"])
    for name in {r["alert"] for r in alerts()}:
        outcomes = tested.get(name, [])
        assert any(outcomes), f"{name}: no test where it fires"
        assert [] in outcomes, f"{name}: no test where it stays silent"


def test_the_rules_read_only_series_the_code_exports() -> None:
    known = exported_series() | recorded_series() | PROMETHEUS_SERIES
    for group in rule_groups():
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - known
            assert not unknown, f"{rule.get('record') or rule.get('alert')}: {unknown}"


def test_the_scrape_config_of_make_up_loads_the_rules(tmp_path: Path) -> None:
    script = ROOT / "hack" / "services.d" / "50-prometheus.sh"
    config = tmp_path / "prometheus.yml"
    generated = run(
        "bash",
        "-c",
        f'ROOT="{ROOT}" SVC="{tmp_path}" AGENTOS_RELAY_METRICS_PORT=59465; '
        f'. "{script}"; prometheus_config > "{config}"',
    )
    assert generated.returncode == 0, generated.stderr
    jobs = {job["job_name"] for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert {"agentos", "agentos-relay"} <= jobs
    checked = run(promtool(), "check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("SUCCESS") >= 3, checked.stdout  # the config and both rule files

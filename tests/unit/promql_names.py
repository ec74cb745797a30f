"""What series a PromQL expression reads, and what series Agent OS exports, for the tests that
hold the dashboards and rules to the code."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"

# Every module that defines metrics (imported before the registry is read).
METRIC_MODULES = (
    "controlplane.api.request_metrics",
    "controlplane.data.retention",
    "controlplane.messaging.metrics",
    "controlplane.observability.egress_metrics",
    "controlplane.observability.metrics",
    "controlplane.observability.run_metrics",
    "operators.agent.operator",
)

# Series Prometheus makes itself (per target, per alert), not exported by any process.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds"}

# Binary operators and modifiers that are words (functions and aggregations are recognised
# by the parenthesis that follows them; a modifier may have none: `/ on(slo) group_left x`).
_KEYWORDS = {
    *("and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"),
    *("by", "without", "on", "ignoring", "group_left", "group_right"),
}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MODIFIER = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.$])[a-zA-Z_:][a-zA-Z0-9_:]*(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric (or recorded series) names `expr` selects.

    Drops strings, label matchers `{...}`, ranges `[...]`, the label lists of `by`,
    `without`, `on`, `ignoring`, `group_left`, `group_right`, function names, keywords and
    Grafana variables (`$__rate_interval`).
    """
    text = _STRING.sub(" ", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _MODIFIER.sub(" ", text)
    return {name for name in _IDENT.findall(text) if name not in _KEYWORDS}


def exported_series() -> set[str]:
    """Every series name the Agent OS processes can expose: the families in the default
    registry once every metric module is imported, with their suffixes (counter `_total`,
    histogram `_bucket` / `_sum` / `_count`, `_created`)."""

    for module in METRIC_MODULES:
        importlib.import_module(module)
    names: set[str] = set()
    for family in REGISTRY.collect():
        base = family.name
        suffixes = {
            "counter": ["_total", "_created"],
            "histogram": ["_bucket", "_sum", "_count", "_created"],
            "summary": ["", "_sum", "_count", "_created"],
            "gauge": [""],
            "info": ["_info"],
        }.get(family.type, [""])
        names.update(base + s for s in suffixes)
        names.update(sample.name for sample in family.samples)
    return names


def rule_groups() -> list[dict[str, Any]]:
    """Every rule group of deploy/prometheus/rules/*.rules.yml."""
    groups: list[dict[str, Any]] = []
    for path in sorted(RULES_DIR.glob("*.rules.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def recorded_series() -> set[str]:
    """Names of the recording rules."""
    return {rule["record"] for g in rule_groups() for rule in g["rules"] if "record" in rule}

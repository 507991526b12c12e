"""The shipped detection layer as data: rule files, the dashboard, its queries, the tools."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = ROOT / "prometheus.yml"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RULE_TESTS_DIR = ROOT / "deploy" / "prometheus" / "tests"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "prober.json"
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"
METRICS_DOC = ROOT / "docs" / "METRICS.md"

DASHBOARD_ROWS = [
    "Verdict",
    "Components",
    "Checks",
    "Flow steps",
    "Phases",
    "Latency heatmap",
    "Prober self-health",
]
DASHBOARD_VARIABLES = ["datasource", "vantage", "instance", "component", "check"]

# Sample values for Grafana's template variables, so dashboard queries become PromQL.
GRAFANA_SAMPLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "datasource": "prometheus",
    "vantage": "local",
    "instance": "127.0.0.1:9797",
    "component": "api",
    "check": "api-health",
}
GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
LABEL_VALUES = re.compile(r"^\s*label_values\((?P<query>.+),\s*\w+\s*\)\s*$", re.DOTALL)
# A contract metric name, not part of a recording rule name (level:metric:operations).
CONTRACT_NAME = re.compile(r"(?<![\w:])(?:probe|prober)_\w+(?![\w:])")
RECORDED_NAME = re.compile(r"(?<![\w:])[a-z_]+:[a-z0-9_]+:[a-z0-9_]+(?![\w:])")
STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
HISTOGRAM_SUFFIX = re.compile(r"_(?:bucket|sum|count)$")


# ---------------------------------------------------------------- tools


def find_tool(name: str) -> str:
    """Return the path of a Prometheus tool; skip without it, or fail when CI is "true"."""
    path = os.environ.get(name.upper()) or shutil.which(name)
    if path:
        return path
    reason = (
        f"{name} not found on PATH (install Debian's prometheus and "
        f"prometheus-alertmanager packages, or set {name.upper()}=/path/to/{name})"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the integration tests", pytrace=False)
    pytest.skip(reason)


def run_tool(*args: str | Path) -> None:
    """Run a tool from the repository root and fail with its output if it fails."""
    proc = subprocess.run(
        [str(arg) for arg in args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    command = " ".join(str(arg) for arg in args)
    assert proc.returncode == 0, f"{command} exited {proc.returncode}\n{proc.stdout}{proc.stderr}"


# ---------------------------------------------------------------- reading the files


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS_DIR.glob("*.yml"))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> Iterator[dict[str, Any]]:
    for path in rule_files():
        for group in load_yaml(path)["groups"]:
            yield from group["rules"]


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """Yield (where, PromQL) for every query in the dashboard, variables substituted."""
    dashboard = load_dashboard()
    for panel in dashboard_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        match = LABEL_VALUES.match(query)
        assert match, f"variable {variable['name']}: expected label_values(query, label)"
        yield f"variable {variable['name']!r}", match["query"]


def substitute_grafana_variables(expr: str) -> str:
    def sample(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        assert name in GRAFANA_SAMPLES, f"unknown Grafana variable ${name} in {expr!r}"
        return GRAFANA_SAMPLES[name]

    return GRAFANA_VARIABLE.sub(sample, expr)


def all_queries() -> list[tuple[str, str]]:
    """Every PromQL expression of the rules and the dashboard, ready to parse."""
    queries = [(f"rule {rule.get('record') or rule['alert']}", rule["expr"]) for rule in rules()]
    queries += [(where, substitute_grafana_variables(expr)) for where, expr in dashboard_queries()]
    return queries

"""The detection layer: Prometheus config and rules, their unit tests, Alertmanager, Grafana.

Tests marked `integration` run the real `promtool` and `amtool`. Without them they skip
with a reason, except where the environment variable CI is "true": there they fail, so
CI cannot pass without having run them. Set PROMTOOL or AMTOOL to use a binary that is
not on PATH. The other tests only read the files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import (
    ALERTMANAGER_CONFIG,
    CONTRACT_NAME,
    DASHBOARD_ROWS,
    DASHBOARD_VARIABLES,
    HISTOGRAM_SUFFIX,
    METRICS_DOC,
    PROMETHEUS_CONFIG,
    RECORDED_NAME,
    ROOT,
    RUNBOOK,
    STRING_LITERAL,
    alerting_rules,
    all_queries,
    dashboard_panels,
    load_dashboard,
    load_yaml,
    recorded_names,
    rule_files,
    rule_test_files,
    rules,
    run_tool,
)


def contract_metrics() -> set[str]:
    """Series named in the first column of docs/METRICS.md's tables."""
    names = re.findall(r"^\| `(\w+)", METRICS_DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(names) > 20, "docs/METRICS.md lists its series in tables"
    return set(names)


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


# ---------------------------------------------------------------- with the real tools


@pytest.mark.integration
def test_prometheus_config_is_valid(promtool: str) -> None:
    run_tool(promtool, "check", "config", PROMETHEUS_CONFIG.relative_to(ROOT))


@pytest.mark.integration
def test_rule_files_are_valid(promtool: str) -> None:
    run_tool(promtool, "check", "rules", *(p.relative_to(ROOT) for p in rule_files()))


@pytest.mark.integration
def test_rule_unit_tests_pass(promtool: str) -> None:
    run_tool(promtool, "test", "rules", *(p.relative_to(ROOT) for p in rule_test_files()))


@pytest.mark.integration
def test_alertmanager_config_is_valid(amtool: str) -> None:
    run_tool(amtool, "check-config", ALERTMANAGER_CONFIG.relative_to(ROOT))


@pytest.mark.integration
def test_every_promql_expression_parses(promtool: str, tmp_path: Path) -> None:
    """Rule and dashboard queries, as recording rules for `promtool check rules`."""
    queries = all_queries()
    records = [
        {"record": f"parse_check_{index:03d}", "expr": expr}
        for index, (_, expr) in enumerate(queries)
    ]
    rules_file = tmp_path / "queries.yml"
    rules_file.write_text(
        yaml.safe_dump({"groups": [{"name": "queries", "rules": records}]}), encoding="utf-8"
    )
    index = "\n".join(f"parse_check_{i:03d}: {where}" for i, (where, _) in enumerate(queries))
    try:
        run_tool(promtool, "check", "rules", rules_file)
    except AssertionError as error:
        raise AssertionError(f"{error}\nwhere each query comes from:\n{index}") from None


# ---------------------------------------------------------------- reading only


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    for rule in alerting_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        for annotation in ("summary", "description", "runbook_url"):
            assert rule["annotations"].get(annotation), f"{rule['alert']}: no {annotation}"


def test_every_runbook_url_points_to_a_runbook_section() -> None:
    anchors = {
        github_anchor(line.lstrip("#"))
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    for rule in alerting_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("https://github.com/prober-dev/prober/blob/main/docs/RUNBOOK.md#")
        assert url.partition("#")[2] in anchors, f"{rule['alert']}: no section for {url}"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in rule_test_files():
        for group in load_yaml(path)["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    alerts = {rule["alert"] for rule in alerting_rules()}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested not firing"


def test_queries_use_only_contract_metrics_and_defined_recording_rules() -> None:
    contract = contract_metrics()
    recorded = recorded_names()
    for where, expr in all_queries():
        code = STRING_LITERAL.sub('""', expr)
        for name in CONTRACT_NAME.findall(code):
            assert name in contract or HISTOGRAM_SUFFIX.sub("", name) in contract, (
                f"{where}: {name} is not in docs/METRICS.md"
            )
        for name in RECORDED_NAME.findall(code):
            assert name in recorded, f"{where}: no recording rule named {name}"


def test_platform_aggregations_exclude_the_canary() -> None:
    """Component and vantage rules that read per-check series or the daemon's
    per-component state leave the canary out."""
    per_check = re.compile(
        r"(?<![\w:])(?:probe_success|prober_check_\w+|prober_component_state|check:\w+:\w+)"
    )
    aggregations = [
        rule
        for rule in rules()
        if rule.get("record", "").startswith(("component:", "vantage_component:"))
    ]
    for rule in aggregations:
        if per_check.search(rule["expr"]):
            assert 'component!="canary"' in rule["expr"], rule["record"]


def test_impaired_and_unscraped_probers_are_left_out() -> None:
    """Alerts on one prober's series carry the exclusion; the job-wide alerts (component,
    platform, vantage) read the vantage vote, whose per-vantage rules carry it."""
    exclusion = "unless on (job, instance) (instance:prober_impaired:bool == 1 or up == 0)"
    per_prober = re.compile(r"(?<![\w:])(?:check|component):\w+:\w+")
    for rule in alerting_rules():
        expr = " ".join(rule["expr"].split())
        if per_prober.search(expr):
            assert exclusion in expr, rule["alert"]
    vantage_rules = [r for r in rules() if r.get("record", "").startswith("vantage_component:")]
    assert vantage_rules
    for rule in vantage_rules:
        assert exclusion in " ".join(rule["expr"].split()), rule["record"]


def test_alertmanager_inhibitions_name_existing_alerts() -> None:
    alerts = {rule["alert"] for rule in alerting_rules()}
    config = load_yaml(ALERTMANAGER_CONFIG)
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            match = re.fullmatch(r'alertname=~?"([^"]+)"', matcher)
            if match:
                assert set(match[1].split("|")) <= alerts, matcher


def test_dashboard_rows_come_in_order() -> None:
    rows = [p["title"] for p in load_dashboard()["panels"] if p["type"] == "row"]
    assert rows == DASHBOARD_ROWS


def test_dashboard_first_row_shows_scope_and_component_states() -> None:
    panels = load_dashboard()["panels"]
    rows = [i for i, p in enumerate(panels) if p["type"] == "row"]
    first_row = {p["title"]: p for p in panels[rows[0] + 1 : rows[1]]}
    for title, series in (
        ("Scope", "job_scope:prober_trouble:bool"),
        ("Components", "prober_component_state"),
    ):
        assert title in first_row, f"no {title!r} panel in the {panels[rows[0]]['title']!r} row"
        assert any(series in t["expr"] for t in first_row[title]["targets"]), title


def test_dashboard_variables_and_datasource() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "prober"
    variables = dashboard["templating"]["list"]
    assert [v["name"] for v in variables] == DASHBOARD_VARIABLES
    assert variables[0]["type"] == "datasource"
    assert variables[0]["query"] == "prometheus"
    for variable in variables[1:]:
        assert variable["type"] == "query"
        assert variable["multi"] and variable["includeAll"], variable["name"]
    for panel in dashboard_panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in dashboard_panels(load_dashboard()["panels"])]
    assert len(ids) == len(set(ids))

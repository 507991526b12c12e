"""Located errors: one helper turns pydantic's errors into `FILE:LINE: key.path: message` for
the config, the web config and the simulator's fault specs and scenarios alike."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prober.config.load import load_config
from prober.config.located import (
    ConfigError,
    ConfigIssue,
    LocatedData,
    data_path,
    error_below,
    key_path,
    validation_issues,
)
from prober.config.read import parse_document
from prober.sim.fault_spec import FaultError, parse_fault_spec
from prober.sim.scenarios import ScenarioError, load_scenario
from prober.web.auth import load_web_config

# WHERE (a file, with its line when it has lines) : key.path : what is wrong.
LOCATED = re.compile(r"^(?P<file>[^:]+?)(?::(?P<line>\d+))?: (?P<key>[\w.\[\]-]+): (?P<what>.+)$")


class _Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate: float = Field(le=1.0)
    names: dict[str, int] = Field(default_factory=dict)


class _Top(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limits: _Limits
    token: str = ""


def _errors(model: type[BaseModel], text: str) -> tuple[ValidationError, LocatedData]:
    doc = parse_document(text, "in.yml")
    with pytest.raises(ValidationError) as caught:
        model.model_validate(doc.data)
    return caught.value, doc


def test_issue_reads_file_line_check_key_message() -> None:
    issue = ConfigIssue("checks/a.yml", "unknown key", 7, "login", "checks[0].colour")
    assert str(issue) == "checks/a.yml:7: check 'login': checks[0].colour: unknown key"
    assert str(ConfigIssue("--fault api", "too high", key="error_rate")) == (
        "--fault api: error_rate: too high"
    )
    assert str(ConfigIssue("", "Field required", key="username")) == "username: Field required"


def test_key_path_puts_indexes_in_brackets() -> None:
    assert key_path(("checks", 0, "steps", 2, "url")) == "checks[0].steps[2].url"
    assert key_path(()) == ""


def test_errors_are_located_at_the_key_sorted_by_line_and_never_echo_values() -> None:
    exc, doc = _errors(_Top, "limits:\n  rate: 7.25\ncolour: red-paint\n")
    issues = validation_issues(exc, doc)
    assert [(i.line, i.key, i.message) for i in issues] == [
        (2, "limits.rate", "Input should be less than or equal to 1"),
        (3, "colour", "unknown key"),
    ]
    assert not any("7.25" in str(i) or "red-paint" in str(i) for i in issues)


def test_a_block_value_is_located_at_its_key_and_a_missing_key_at_its_parent() -> None:
    exc, doc = _errors(_Top, "token: x\nlimits:\n  names: {a: 1}\n")
    (issue,) = validation_issues(exc, doc)
    assert (issue.line, issue.key, issue.message) == (2, "limits.rate", "Field required")


def test_input_is_shown_only_when_asked() -> None:
    exc, doc = _errors(_Top, "limits:\n  rate: 2\n")
    (issue,) = validation_issues(exc, doc, show_input=True)
    assert issue.message == "Input should be less than or equal to 1 (got 2)"


def test_dict_key_errors_and_union_tags_leave_the_key_path() -> None:
    assert data_path({"faults": {"search": {}}}, ("faults", "search", "[key]")) == (
        "faults",
        "search",
    )
    checks = {"checks": [{"url": "x"}]}
    assert data_path(checks, ("checks", 0, "http", "url"), ("http", "flow")) == (
        "checks",
        0,
        "url",
    )


class _Phase(BaseModel):
    faults: dict[str, dict[str, int]]

    @field_validator("faults")
    @classmethod
    def _no_negative(cls, faults: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        bad = [((c, k), "must not be negative", v) for c, f in faults.items() for k, v in f.items()]
        bad = [error for error in bad if isinstance(error[2], int) and error[2] < 0]
        if bad:
            raise error_below("Phase", bad)
        return faults


def test_a_rule_about_part_of_a_value_is_located_at_that_part() -> None:
    exc, doc = _errors(_Phase, "faults:\n  login:\n    delay: 1\n    rate: -1\n")
    (issue,) = validation_issues(exc, doc, show_input=True)
    assert (issue.line, issue.key, issue.message) == (
        4,
        "faults.login.rate",
        "must not be negative",
    )


def _shape(message: str) -> tuple[str, str, str]:
    """(file, has a line, key) of a located message; fails the test if it is not one."""
    match = LOCATED.match(message)
    assert match is not None, message
    return match["file"], "line" if match["line"] else "", match["key"]


def _what(message: str) -> str:
    match = LOCATED.match(message)
    assert match is not None, message
    return match["what"]


def test_config_web_config_fault_specs_and_scenarios_share_one_shape(tmp_path: Path) -> None:
    config = tmp_path / "prober.yml"
    config.write_text("interval: 10s\nlabels:\n  team: [a]\n")
    with pytest.raises(ConfigError) as config_error:
        load_config(config, env={})
    web = tmp_path / "web.yml"
    web.write_text("http_server_config:\n  headers:\n    X-Frame-Options: [deny]\n")
    with pytest.raises(ConfigError) as web_error:
        load_web_config(web)
    scenario = tmp_path / "outage.yml"
    scenario.write_text("phases:\n  - at: 0\n    name: a\n    faults:\n      login: {status: 99}\n")
    with pytest.raises(ScenarioError) as scenario_error:
        load_scenario(str(scenario))
    with pytest.raises(FaultError) as fault_error:
        parse_fault_spec({"status": 99}, "--fault login")

    assert _shape(str(config_error.value)) == (str(config), "line", "labels.team")
    assert _shape(str(web_error.value)) == (
        str(web),
        "line",
        "http_server_config.headers.X-Frame-Options",
    )
    assert _shape(str(scenario_error.value)) == (
        str(scenario),
        "line",
        "phases[0].faults.login.status",
    )
    assert _shape(str(fault_error.value)) == ("--fault login", "", "status")
    # The same pydantic error says the same in a scenario file and on the command line.
    assert _what(str(scenario_error.value)) == _what(str(fault_error.value))

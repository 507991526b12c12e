"""Config loading: valid files load, every kind of mistake gives a located error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from prober.config.load import ConfigError, load_config
from prober.config.model import FlowCheck, HttpCheck
from tests.support.checks import WriteConfig
from tests.support.processes import REPO


def test_shipped_config_loads() -> None:
    config = load_config(REPO / "prober.yml", env={})
    names = {c.name for c in config.checks}
    assert {"api-health", "login", "timeline", "notifications", "canary"} <= names
    assert {c.component for c in config.checks} >= {"api", "login", "timeline", "notifications"}
    assert config.settings.labels == {"vantage": "local"}


def test_defaults_and_durations_resolve(write_config: WriteConfig) -> None:
    path = write_config("""
        interval: 1m
        timeout: 2s
        checks:
          - {name: a, kind: http, component: api, url: "http://127.0.0.1:1/"}
          - {name: b, kind: http, component: api, url: "http://127.0.0.1:1/", interval: 500ms,
             timeout: 250ms}
    """)
    config = load_config(path, env={})
    a, b = config.checks
    assert (a.interval, a.timeout) == (60.0, 2.0)
    assert (b.interval, b.timeout) == (0.5, 0.25)


def test_env_substitution_with_default(write_config: WriteConfig) -> None:
    path = write_config("""
        labels: {vantage: "${VANTAGE:-home}", region: "${REGION}"}
        checks:
          - {name: a, kind: http, component: api, url: "${BASE:-http://127.0.0.1:1}/x"}
    """)
    config = load_config(path, env={"REGION": "eu"})
    assert config.settings.labels == {"vantage": "home", "region": "eu"}
    check = config.checks[0]
    assert isinstance(check, HttpCheck)
    assert check.url.render(config.template_values()) == "http://127.0.0.1:1/x"


def test_check_files_glob_relative_to_main(write_config: WriteConfig) -> None:
    path = write_config(
        "check_files: [checks/*.yml]\n",
        one="checks:\n  - {name: one, kind: http, component: api, url: 'http://x/'}\n",
        two="checks:\n  - {name: two, kind: http, component: api, url: 'http://x/'}\n",
    )
    config = load_config(path, env={})
    assert [c.name for c in config.checks] == ["one", "two"]
    assert len(config.files) == 3


BAD_CONFIGS = [
    (
        "unknown-key",
        "  - {name: a, kind: http, component: api, url: 'http://x/', colour: red}",
        "checks[0].colour",
        "unknown key",
    ),
    (
        "bad-duration",
        "  - {name: a, kind: http, component: api, url: 'http://x/', interval: soon}",
        "checks[0].interval",
        "duration",
    ),
    (
        "timeout-over-interval",
        "  - {name: a, kind: http, component: api, url: 'http://x/', interval: 1s, timeout: 2s}",
        "checks[0].timeout",
        "below interval",
    ),
    ("missing-url", "  - {name: a, kind: http, component: api}", "checks[0].url", "required"),
    ("bad-kind", "  - {name: a, kind: smtp, component: api}", "checks[0]", "kind"),
    ("no-kind-no-url", "  - {name: a, target: 'x:1'}", "checks[0]", "give kind"),
    (
        "component-as-label",
        "  - {name: a, url: 'http://x/', labels: {component: api}}",
        "checks[0].labels",
        "`component:` key",
    ),
    (
        "bad-assertion",
        "  - {name: a, kind: http, component: api, url: 'http://x/', assert: ['status ?? 200']}",
        "checks[0].assert[0]",
        "cannot parse assertion",
    ),
    (
        "order-needs-number",
        "  - {name: a, kind: http, component: api, url: 'http://x/', assert: ['$.n > many']}",
        "checks[0].assert[0]",
        "needs a number",
    ),
    (
        "bad-status",
        "  - {name: a, kind: http, component: api, url: 'http://x/', expected_status: [999]}",
        "checks[0].expected_status",
        "not a status code",
    ),
    (
        "unknown-variable",
        "  - {name: a, kind: http, component: api, url: 'http://x/${nope}'}",
        "checks[0].url",
        "unknown variable 'nope'",
    ),
    (
        "reserved-label",
        "  - {name: a, kind: http, component: api, url: 'http://x/', labels: {step: x}}",
        "checks[0].labels",
        "reserved",
    ),
    (
        "bad-detail",
        "  - {name: a, kind: http, component: api, url: 'http://x/', detail: everything}",
        "checks[0].detail",
        "'basic' or 'full'",
    ),
    (
        "flow-without-steps",
        "  - {name: a, kind: flow, component: api, steps: []}",
        "checks[0].steps",
        "at least 1",
    ),
]


@pytest.mark.parametrize(
    ("snippet", "key", "message"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_check_gives_located_error(
    write_config: WriteConfig, snippet: str, key: str, message: str
) -> None:
    path = write_config(
        "interval: 10s\ntimeout: 1s\ncheck_files: [checks/*.yml]\n",
        bad="checks:\n" + snippet + "\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    issue = caught.value.issues[0]
    assert issue.file.endswith("bad.yml")
    assert issue.line == 2
    assert issue.key.startswith(key)
    assert message in issue.message
    assert "Traceback" not in str(caught.value)


def test_yaml_syntax_error_has_line(write_config: WriteConfig) -> None:
    path = write_config("interval: 10s\nchecks:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.issues[0].line is not None
    assert "invalid YAML" in str(caught.value)


def test_duplicate_check_names_across_files(write_config: WriteConfig) -> None:
    check = "checks:\n  - {name: same, kind: http, component: api, url: 'http://x/'}\n"
    path = write_config("check_files: [checks/*.yml]\n", one=check, two=check)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "also used in" in str(caught.value)


def test_missing_check_file_is_located(write_config: WriteConfig) -> None:
    path = write_config("check_files: [checks/absent.yml]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "prober.yml:1: check_files[0]" in str(caught.value)


def test_unset_environment_variable(write_config: WriteConfig) -> None:
    path = write_config("labels: {vantage: '${NOT_SET_ANYWHERE}'}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "labels.vantage" in str(caught.value)
    assert "NOT_SET_ANYWHERE" in str(caught.value)


def test_secret_from_env_is_never_echoed_in_errors(write_config: WriteConfig) -> None:
    canary = "s3cr3t-canary-value"
    path = write_config("""
        secrets: {token: {env: API_TOKEN}}
        labels: {team: "${API_TOKEN}"}
        checks:
          - name: a
            kind: http
            component: api
            url: http://x/
            interval: "${API_TOKEN}"
            headers: {Authorization: "Bearer ${token}"}
    """)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"API_TOKEN": canary})
    assert "checks[0].interval" in str(caught.value)
    assert canary not in str(caught.value)


def test_secret_file_is_read_and_redactable(write_config: WriteConfig, tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("file-secret-123\n")
    path = write_config("""
        secrets: {token: {file: token.txt}}
        checks:
          - {name: a, kind: http, component: api, url: "http://x/",
             headers: {Authorization: "Bearer ${token}"}}
    """)
    config = load_config(path, env={})
    assert config.secrets["token"].reveal() == "file-secret-123"
    assert repr(config.secrets["token"]) == "Secret(***)"
    assert "file-secret-123" in config.sensitive_values


def test_unreadable_secret_file_is_located(write_config: WriteConfig) -> None:
    path = write_config("secrets: {token: {file: /nonexistent/token}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "secrets.token" in str(caught.value)


def test_flow_variables_must_come_from_earlier_steps(write_config: WriteConfig) -> None:
    flow = textwrap.dedent("""
        checks:
          - name: f
            kind: flow
            component: api
            steps:
              - {name: use, url: "http://x/${token}"}
              - {name: login, url: "http://x/login", extract: {token: $.t}}
    """)
    path = write_config("check_files: [checks/*.yml]\n", flow=flow)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "steps[0].url" in str(caught.value)
    fixed = textwrap.dedent("""
        checks:
          - name: f
            kind: flow
            component: api
            steps:
              - {name: login, url: "http://x/login", extract: {token: $.t}}
              - {name: use, url: "http://x/${token}"}
    """)
    path = write_config("check_files: [checks/*.yml]\n", flow=fixed)
    check = load_config(path, env={}).checks[0]
    assert isinstance(check, FlowCheck)
    assert [s.name for s in check.steps] == ["login", "use"]


def test_error_on_a_block_mapping_points_at_its_key(write_config: WriteConfig) -> None:
    path = write_config("interval: 10s\nlabels:\n  bad-name: x\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.issues[0].line == 2
    assert caught.value.issues[0].key == "labels"


def test_env_values_sent_by_tcp_checks_are_sensitive(write_config: WriteConfig) -> None:
    path = write_config("""
        checks:
          - {name: t, kind: tcp, component: api, target: "127.0.0.1:1",
             send: ["AUTH ${TCP_TOKEN}"], expect: ["^OK"]}
    """)
    config = load_config(path, env={"TCP_TOKEN": "tcp-secret-99"})
    assert "tcp-secret-99" in config.sensitive_values


def test_smallest_check_is_a_name_and_a_url(write_config: WriteConfig) -> None:
    path = write_config("checks: [{name: home, url: 'http://127.0.0.1:1/'}]\n")
    (check,) = load_config(path, env={}).checks
    assert isinstance(check, HttpCheck)
    assert (check.kind, check.component) == ("http", "home")


def test_kind_defaults_to_flow_for_steps(write_config: WriteConfig) -> None:
    path = write_config("checks: [{name: f, steps: [{name: s, url: 'http://127.0.0.1:1/'}]}]\n")
    (check,) = load_config(path, env={}).checks
    assert isinstance(check, FlowCheck)
    assert check.component == "f"


def test_every_error_of_a_file_in_one_pass_sorted_by_line(write_config: WriteConfig) -> None:
    path = write_config(
        "check_files: [checks/*.yml]\n",
        bad="""\
        checks:
          - name: tmpl
            url: "http://x/${nope}"
          - name: slow
            url: http://x/
            interval: 10s
            timeout: 20s
          - name: extra
            url: http://x/
            colour: blue
          - name: nourl
            kind: http
          - name: slow
            url: http://x/
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    found = [(i.line, i.check, i.key, i.message) for i in caught.value.issues]
    assert [(line, check) for line, check, _, _ in found] == [
        (3, "tmpl"),
        (7, "slow"),
        (10, "extra"),
        (11, "nourl"),
        (13, "slow"),
    ]
    messages = [m for _, _, _, m in found]
    assert "unknown variable 'nope'" in messages[0]
    assert "below interval" in messages[1]
    assert messages[2] == "unknown key"
    assert "required" in messages[3].lower()
    assert "also used" in messages[4]


def test_bad_global_key_does_not_hide_check_errors(write_config: WriteConfig) -> None:
    path = write_config(
        "interval: soon\ncheck_files: [checks/*.yml]\n",
        bad="checks:\n  - {name: a, url: 'http://x/', colour: red}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert [i.key for i in caught.value.issues] == ["interval", "checks[0].colour"]

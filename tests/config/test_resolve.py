"""Resolving checks: the rules across fields and files, and what is filled in before a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from prober.config.load import ConfigError, load_config
from prober.config.model import FlowCheck
from tests.support.checks import WriteConfig

POOLED = """
checks:
  - name: pooled
    steps: [{{name: home, url: "http://127.0.0.1:1/${{account}}"}}]
    accounts: {{file: {file}}}
    fanout: {fanout}
"""


def _issues(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return [(issue.key, issue.message) for issue in caught.value.issues]


def test_an_accounts_file_gives_the_pool_its_names(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "accounts.txt").write_text("# the pool\nuser-1\n\n  user-2  \nuser-3\n")
    path = write_config(POOLED.format(file="accounts.txt", fanout=2))
    (check,) = load_config(path, env={}).checks
    assert isinstance(check, FlowCheck)
    assert check.account_names == ("user-1", "user-2", "user-3")


@pytest.mark.parametrize(
    ("content", "fanout", "issue"),
    [
        (None, 1, ("checks[0].accounts.file", "cannot read accounts file")),
        ("# nobody\n", 1, ("checks[0].accounts.file", "has no account names")),
        ("ann\nnot a name\n", 1, ("checks[0].accounts.file", "has a name that is not valid")),
        ("ann\nbob\n", 3, ("checks[0].fanout", "fanout 3 is more than the 2 accounts")),
    ],
    ids=["unreadable", "empty", "bad-name", "fanout-over-pool"],
)
def test_a_bad_accounts_file_is_located(
    write_config: WriteConfig,
    tmp_path: Path,
    content: str | None,
    fanout: int,
    issue: tuple[str, str],
) -> None:
    if content is not None:
        (tmp_path / "accounts.txt").write_text(content)
    path = write_config(POOLED.format(file="accounts.txt", fanout=fanout))
    ((key, message),) = _issues(path)
    assert key == issue[0]
    assert issue[1] in message


def test_retries_and_backoff_must_fit_in_the_interval(write_config: WriteConfig) -> None:
    path = write_config("""
        checks:
          - {name: a, url: "http://x/", interval: 10s, timeout: 3s, retries: 2, retry_backoff: 1s}
    """)
    assert _issues(path) == [
        (
            "checks[0].timeout",
            "timeout x (retries + 1) plus backoff (11s) must be below interval (10s)",
        )
    ]


def test_unknown_variables_in_json_bodies_are_located(write_config: WriteConfig) -> None:
    path = write_config("""
        checks:
          - {name: a, url: "http://x/", method: POST, json: {user: {names: ["${who}"]}}}
    """)
    ((key, message),) = _issues(path)
    assert key == "checks[0].json.user.names[0]"
    assert message.startswith("unknown variable 'who'")


def test_unknown_variables_in_websocket_and_grpc_checks_are_located(
    write_config: WriteConfig,
) -> None:
    """A websocket check's URL and headers and a grpc check's metadata are templates filled
    at run time, as an http check's request is: a name nothing gives is a load error."""
    path = write_config("""
        secrets: {token: {env: TOKEN}}
        checks:
          - name: ws
            kind: websocket
            component: api
            url: "ws://127.0.0.1:1/${room}"
            headers: {Authorization: "Bearer ${token}", X-Who: "${who}"}
          - name: g
            kind: grpc
            component: api
            target: "127.0.0.1:1"
            metadata: {authorization: "Bearer ${token}", x-tenant: "${tenant:-}${tenant}"}
    """)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"TOKEN": "t"})
    unknown = "not set in the environment, not a secret, not extracted by an earlier step"
    assert str(caught.value).splitlines() == [
        f"{path}:7: check 'ws': checks[0].url: unknown variable 'room': {unknown}",
        f"{path}:8: check 'ws': checks[0].headers.X-Who: unknown variable 'who': {unknown}",
        f"{path}:13: check 'g': checks[1].metadata.x-tenant: unknown variable 'tenant': {unknown}",
    ]


def test_a_session_may_use_what_its_login_extracts_later(write_config: WriteConfig) -> None:
    path = write_config("""
        checks:
          - name: f
            steps:
              - {name: read, url: "http://x/", headers: {Authorization: "Bearer ${token}"},
                 session: s}
              - {name: login, url: "http://x/login", extract: {token: $.t}, session: s}
    """)
    (check,) = load_config(path, env={}).checks
    assert isinstance(check, FlowCheck)

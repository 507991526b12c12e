"""Property tests: every mutated config either loads or gives located errors, never a crash."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prober.config.load import ConfigError, load_config

BASE: dict[str, Any] = {
    "interval": "10s",
    "timeout": "2s",
    "labels": {"vantage": "eu"},
    "secrets": {"pw": {"env": "PW", "default": "x"}},
    "checks": [
        {
            "name": "a",
            "kind": "http",
            "component": "api",
            "url": "http://127.0.0.1:1/",
            "assert": ["status == 200", "$.a exists"],
            "expected_status": [200, "2xx"],
        },
        {
            "name": "f",
            "kind": "flow",
            "component": "login",
            "retries": 1,
            "steps": [
                {
                    "name": "login",
                    "method": "POST",
                    "url": "http://127.0.0.1:1/login",
                    "json": {"user": "u", "password": "${pw}"},
                    "extract": {"token": "$.token"},
                    "session": "s",
                },
                {
                    "name": "read",
                    "url": "http://127.0.0.1:1/r",
                    "headers": {"Authorization": "Bearer ${token}"},
                    "assert": ["len($.x) > 0"],
                },
            ],
        },
        {"name": "t", "kind": "tcp", "component": "api", "target": "127.0.0.1:1"},
        {"name": "d", "kind": "dns", "component": "api", "query_name": "example.test"},
    ],
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(
        ["10s", "0ms", "-1s", "${X}", "${", "2xx", "$.", "len(", "status ==", "ip6", "http", "flow"]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


ALL_PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    config = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent: Any = config
        try:
            for part in path[:-1]:
                parent = parent[part]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(values)
            elif action == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=8))] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue
    return config


def _load(tmp: Path, text: str) -> None:
    path = tmp / "prober.yml"
    path.write_text(text)
    try:
        load_config(path, env={"PW": "secret-pw"})
    except ConfigError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.file == str(path)
            assert issue.message
        assert "secret-pw" not in str(exc)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=mutated())
def test_mutated_structure_loads_or_gives_located_errors(
    tmp_path_factory: Any, config: dict[str, Any]
) -> None:
    _load(tmp_path_factory.mktemp("fuzz"), yaml.safe_dump(config))


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_text_loads_or_gives_located_errors(
    tmp_path_factory: Any, data: st.DataObject
) -> None:
    text = yaml.safe_dump(BASE)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 5))
        insert = data.draw(
            st.sampled_from(
                [
                    "",
                    ":",
                    "- ",
                    "{",
                    "}",
                    "[",
                    "\t",
                    "\n  ",
                    "'",
                    "&a",
                    "*a",
                    "!!python/object:os.system",
                    "\x00",
                    "${",
                ]
            )
        )
        text = text[:at] + insert + text[at + cut :]
    _load(tmp_path_factory.mktemp("fuzz"), text)

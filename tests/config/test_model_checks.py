"""Check models: interval and timeout are always set, from the file, the global settings or
the global defaults."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from prober.config.load import ConfigError, load_config
from prober.config.model import Check
from prober.config.model_checks import TimingDefaults, timing_context
from tests.support.checks import WriteConfig

CHECKS: TypeAdapter[Check] = TypeAdapter(Check)


def _check(context: dict[str, Any] | None = None, **fields: Any) -> Check:
    return CHECKS.validate_python(
        {"name": "t", "url": "http://127.0.0.1:1/", **fields}, context=context
    )


@pytest.mark.parametrize(
    ("fields", "defaults", "timing"),
    [
        ({}, None, (30.0, 10.0)),
        ({}, TimingDefaults(15.0, 5.0), (15.0, 5.0)),
        ({"interval": "5s"}, TimingDefaults(15.0, 5.0), (5.0, 4.0)),
        ({"interval": "2s", "timeout": "1.9s"}, TimingDefaults(15.0, 5.0), (2.0, 1.9)),
        ({"timeout": "3s"}, TimingDefaults(15.0, 5.0), (15.0, 3.0)),
        ({"interval": None, "timeout": None}, TimingDefaults(15.0, 5.0), (15.0, 5.0)),
    ],
    ids=["global-defaults", "settings", "timeout-capped", "both-given", "timeout-given", "null"],
)
def test_timing_is_filled_in_as_the_check_is_validated(
    fields: dict[str, Any], defaults: TimingDefaults | None, timing: tuple[float, float]
) -> None:
    context = timing_context(defaults) if defaults is not None else None
    check = _check(context, **fields)
    assert (check.interval, check.timeout) == timing


def test_an_invalid_interval_is_one_error_not_also_a_timeout_one() -> None:
    with pytest.raises(ValidationError) as caught:
        _check(interval="soon")
    assert [e["loc"] for e in caught.value.errors()] == [("http", "interval")]


def test_global_settings_are_the_defaults_of_every_file(write_config: WriteConfig) -> None:
    path = write_config(
        "interval: 20s\ntimeout: 3s\ncheck_files: [checks/*.yml]\n"
        "checks: [{name: main, url: 'http://127.0.0.1:1/'}]\n",
        more="checks:\n  - {name: other, url: 'http://127.0.0.1:1/', interval: 2s}\n",
    )
    main, other = load_config(path, env={}).checks
    assert (main.interval, main.timeout) == (20.0, 3.0)
    assert (other.interval, other.timeout) == (2.0, 1.6)


def test_an_invalid_global_interval_leaves_checks_on_the_default(write_config: WriteConfig) -> None:
    path = write_config("interval: soon\nchecks: [{name: a, url: 'http://x/', timeout: 40s}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert [(i.key, i.message) for i in caught.value.issues] == [
        ("interval", "expected a duration such as 15s, 500ms or 1m"),
        ("checks[0].timeout", "timeout (40s) must be below interval (30s)"),
    ]

"""The kinds are written once: each has a config model, a probe module, a facts type, and
the metrics' family table and the trace read that facts type."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from prober.cli.trace import format_step
from prober.config.model import CHECK_KINDS, CHECK_MODELS, Check
from prober.probes.registry import KINDS, probe_for
from prober.result import Facts, StepResult, TlsFacts
from prober.sinks.metrics.families import FACTS_FAMILIES
from tests.support.checks import http_check


def test_every_kind_of_the_config_has_a_probe_and_nothing_else_does() -> None:
    assert list(KINDS) == list(CHECK_KINDS)
    assert [k.model for k in KINDS.values()] == list(CHECK_MODELS)
    assert probe_for(http_check("http://127.0.0.1:9/")) is KINDS["http"].run


@pytest.mark.parametrize("kind", CHECK_KINDS)
def test_each_kind_carries_facts_the_metrics_and_the_trace_know(kind: str) -> None:
    facts = KINDS[kind].facts
    assert facts in get_args(Facts)
    assert FACTS_FAMILIES[facts], f"{facts.__name__} has no family table"
    assert format_step(StepResult("s", True, 0.0, facts=facts()))


def test_nested_tls_facts_have_families_too() -> None:
    assert FACTS_FAMILIES[TlsFacts]


def test_an_unknown_kind_is_refused_naming_every_kind() -> None:
    with pytest.raises(ValidationError) as error:
        TypeAdapter(Check).validate_python({"name": "x", "kind": "smtp"})
    named = f"give kind ({', '.join(CHECK_KINDS[:-1])} or {CHECK_KINDS[-1]})"
    assert named in str(error.value)
    assert CHECK_KINDS[:4] == ("http", "flow", "tcp", "dns")  # the message as it always read

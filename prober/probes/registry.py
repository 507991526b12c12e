"""The probe of each kind of check, found from the one list of kinds in the config.

The config lists the kinds once (`prober.config.model.CHECK_MODELS`); the probe of kind `x`
is `prober/probes/x.py`: its `run(check, ctx) -> Outcome` and `FACTS`, the type of the
facts its steps carry (which the metrics' family tables and the trace dispatch on). So a
new kind is a config model, its module here, its facts type and its family table, and no
list of kinds anywhere else.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prober.config.model import CHECK_KINDS, CHECK_MODELS, Check, CheckBase
from prober.probes.context import ProbeContext
from prober.result import Facts, Outcome

# Every kind's probe: given its own kind of check and the attempt's context, what it found.
Probe = Callable[[Any, ProbeContext], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class ProbeKind:
    """One kind of check: its config model, its probe and the type of its steps' facts."""

    name: str
    model: type[CheckBase]
    run: Probe
    facts: type[Facts]


def _kind(name: str, model: type[CheckBase]) -> ProbeKind:
    module = importlib.import_module(f"prober.probes.{name}")
    return ProbeKind(name, model, module.run, module.FACTS)


KINDS: dict[str, ProbeKind] = {
    name: _kind(name, model) for name, model in zip(CHECK_KINDS, CHECK_MODELS, strict=True)
}


def probe_for(check: Check) -> Probe:
    """The probe function for this check's kind."""
    return KINDS[check.kind].run

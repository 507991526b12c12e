"""Probes: one module per kind, each `async def run(check, ctx) -> Result`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prober.config.model import Check
from prober.probes import dns, flow, http, tcp
from prober.probes.context import ProbeContext
from prober.result import Result

Probe = Callable[[Any, ProbeContext], Awaitable[Result]]

PROBES: dict[str, Probe] = {"http": http.run, "flow": flow.run, "tcp": tcp.run, "dns": dns.run}


def probe_for(check: Check) -> Probe:
    """The probe function for this check's kind."""
    return PROBES[check.kind]

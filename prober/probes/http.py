"""`kind: http`: one request, run as a one-step flow so both share one request path."""

from __future__ import annotations

from collections.abc import Awaitable

from prober.config.model import HttpCheck
from prober.probes.context import ProbeContext
from prober.probes.flow import FlowStep, run_steps
from prober.result import HttpFacts, Outcome

STEP_NAME = "request"
FACTS = HttpFacts


def run(check: HttpCheck, ctx: ProbeContext) -> Awaitable[Outcome]:
    """Send the check's request and judge the response: the flow's own coroutine, awaited
    by the caller as any kind's `run` (no frame of its own to pass through per run)."""
    return run_steps((FlowStep(STEP_NAME, check),), ctx)

"""`kind: http`: one request, run as a one-step flow so both share one request path."""

from __future__ import annotations

from prober.config.model import HttpCheck
from prober.probes.context import ProbeContext
from prober.probes.flow import FlowStep, run_steps
from prober.result import HttpFacts, Outcome

STEP_NAME = "request"
FACTS = HttpFacts


async def run(check: HttpCheck, ctx: ProbeContext) -> Outcome:
    """Send the check's request and judge the response."""
    return await run_steps([FlowStep(STEP_NAME, check)], ctx)

"""`kind: http`: one request, run as a one-step flow so both share one request path."""

from __future__ import annotations

from prober.config.model import HttpCheck
from prober.probes.context import ProbeContext
from prober.probes.flow import FlowStep, run_steps
from prober.result import Result

STEP_NAME = "request"


async def run(check: HttpCheck, ctx: ProbeContext) -> Result:
    """Send the check's request and judge the response."""
    return await run_steps(check.name, [FlowStep(STEP_NAME, check)], ctx)

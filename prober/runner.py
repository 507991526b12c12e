"""Run one check once: own its deadline, retries and timing around the kind's probe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from prober.config_model import Check
from prober.probes import probe_for
from prober.probes.context import HttpClients, ProbeContext
from prober.probes.sessions import SessionStore
from prober.result import AttemptFailure, Reason, Result, StepResult

# The probe enforces the deadline itself; this grace only catches a probe that did not.
_DEADLINE_GRACE = 0.05


@dataclass
class RunEnvironment:
    """What every run shares: HTTP clients, template values, secrets to hide, sessions."""

    clients: HttpClients
    values: Mapping[str, str]
    sensitive: frozenset[str]
    sessions: SessionStore


async def run_check(check: Check, env: RunEnvironment) -> Result:
    """Run the check with its timeout per attempt and its retries; count every failed attempt."""
    assert check.timeout is not None
    failures: list[AttemptFailure] = []
    attempts = 0
    while True:
        attempts += 1
        result = await _attempt(check, env, budget=check.timeout)
        if result.success or attempts > check.retries:
            break
        failures.append(AttemptFailure(result.reason or Reason.ERROR, result.failed_step))
        if check.retry_backoff:
            await asyncio.sleep(check.retry_backoff * attempts)
    if not result.success:
        failures.append(AttemptFailure(result.reason or Reason.ERROR, result.failed_step))
    degraded = bool(
        result.success and check.degraded_latency and result.duration > check.degraded_latency
    )
    return replace(result, attempts=attempts, failures=tuple(failures), degraded=degraded)


async def _attempt(check: Check, env: RunEnvironment, budget: float) -> Result:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    ctx = ProbeContext(env.clients, deadline, env.values, env.sensitive, env.sessions)
    started_at = time.time()
    start = time.perf_counter()
    try:
        async with asyncio.timeout_at(deadline + _DEADLINE_GRACE):
            return await probe_for(check)(check, ctx)
    except TimeoutError:
        step = ctx.current_step
        steps = list(ctx.progress)
        if step:
            steps.append(
                StepResult(
                    step, False, time.perf_counter() - start, Reason.TIMEOUT, "deadline reached"
                )
            )
        return Result(
            check=check.name,
            success=False,
            duration=time.perf_counter() - start,
            started_at=started_at,
            reason=Reason.TIMEOUT,
            message=f"deadline of {budget:g}s reached",
            failed_step=step,
            steps=tuple(steps),
        )

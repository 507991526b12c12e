"""Flows: ordered requests that carry variables (a login token) from step to step."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from prober.config_model import FlowCheck, RequestSpec, Step
from prober.probes.context import ProbeContext
from prober.probes.step import StepOutcome, run_step
from prober.result import Result, StepResult

_UNAUTHORIZED = 401


@dataclass(frozen=True, slots=True)
class FlowStep:
    """A request with its place in a flow; a plain http check is one of these."""

    name: str
    spec: RequestSpec
    critical: bool = True
    always_run: bool = False
    session: str | None = None
    session_ttl: float = 300.0

    @classmethod
    def of(cls, step: Step) -> FlowStep:
        return cls(
            step.name, step, not step.allow_failure, step.always_run, step.session, step.session_ttl
        )


@dataclass
class _FlowState:
    """What a run carries from step to step; the secrets it learns go to `ctx.redactor`."""

    variables: dict[str, str] = field(default_factory=dict)
    cached_logins: dict[str, FlowStep] = field(default_factory=dict)
    relogged: bool = False


async def run(check: FlowCheck, ctx: ProbeContext) -> Result:
    """Run a flow check's steps in order; stop at the first failing critical step."""
    return await run_steps(check.name, [FlowStep.of(s) for s in check.steps], ctx)


async def run_steps(check_name: str, steps: Sequence[FlowStep], ctx: ProbeContext) -> Result:
    """Run steps in order, reporting the first critical failure; cleanup steps always run."""
    started_at = time.time()
    start = time.perf_counter()
    state = _FlowState()
    failed: StepResult | None = None
    for step in steps:
        if failed is not None and not step.always_run:
            continue
        ctx.current_step = step.name
        result = await _run_one(step, state, ctx)
        ctx.progress.append(result)
        if failed is None and not result.success and step.critical:
            failed = result
    ctx.current_step = ""
    return Result(
        check=check_name,
        success=failed is None,
        duration=time.perf_counter() - start,
        started_at=started_at,
        reason=failed.reason if failed else None,
        message=failed.message if failed else "",
        failed_step=failed.name if failed else "",
        steps=tuple(ctx.progress),
    )


async def _run_one(step: FlowStep, state: _FlowState, ctx: ProbeContext) -> StepResult:
    if step.session is not None:
        return await _login(step, state, ctx)
    outcome = await _request(step, state, ctx)
    if outcome.result.status_code == _UNAUTHORIZED and state.cached_logins and not state.relogged:
        # A cached token was refused: log in again once, then retry this step once.
        state.relogged = True
        for session, login_step in list(state.cached_logins.items()):
            ctx.sessions.invalidate(session)
            ctx.sessions.record(session, "rejected")
            login = await _login(login_step, state, ctx)
            ctx.progress.append(login)
            if not login.success:
                return outcome.result
        outcome = await _request(step, state, ctx)
    return outcome.result


async def _request(step: FlowStep, state: _FlowState, ctx: ProbeContext) -> StepOutcome:
    outcome = await run_step(step.name, step.spec, state.variables, ctx, step.critical)
    state.variables.update(outcome.variables)  # its secret values widened ctx.redactor
    return outcome


async def _login(step: FlowStep, state: _FlowState, ctx: ProbeContext) -> StepResult:
    """Reuse the session's cached login, or log in and cache what the step extracts."""
    session = step.session
    assert session is not None
    async with ctx.sessions.lock(session):
        cached = None if ctx.fresh_login else ctx.sessions.get(session)
        if cached is not None:
            state.variables.update(cached.variables)
            ctx.redactor = ctx.redactor.with_secrets(cached.variables.values())
            state.cached_logins[session] = step
            ctx.sessions.record(session, "reused")
            return StepResult(
                name=step.name,
                success=True,
                duration=0.0,
                critical=step.critical,
                cached=True,
                request_line=f"(session {session} reused)",
            )
        state.cached_logins.pop(session, None)
        outcome = await _request(step, state, ctx)
        ctx.sessions.record(session, "success" if outcome.result.success else "failure")
        if outcome.result.success:
            ctx.sessions.put(session, outcome.variables, step.session_ttl)
        return outcome.result

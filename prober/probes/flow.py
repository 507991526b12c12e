"""Flows: ordered requests that carry variables (a login token) from step to step."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from prober.config.model import FlowCheck, Poll, RequestSpec, Step
from prober.probes.context import ProbeContext
from prober.probes.step import StepRun, run_step
from prober.result import HttpFacts, Outcome, Reason, StepResult

FACTS = HttpFacts

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
    poll: Poll | None = None
    component: str = ""  # the component the step exercises

    @classmethod
    def of(cls, step: Step, component: str = "") -> FlowStep:
        return cls(
            step.name,
            step,
            not step.allow_failure,
            step.always_run,
            step.session,
            step.session_ttl,
            step.poll,
            step.component or component,
        )


@dataclass
class _FlowState:
    """What a run carries from step to step; the secrets it learns go to `ctx.redactor`."""

    variables: dict[str, str] = field(default_factory=dict)
    cached_logins: dict[str, FlowStep] = field(default_factory=dict)
    relogged: bool = False


async def run(check: FlowCheck, ctx: ProbeContext) -> Outcome:
    """Run a flow check's steps in order; stop at the first failing critical step.

    A pooled flow runs once per account of this run, concurrently, each account in a
    context of its own; the Outcome merges them (see `merge_accounts`).
    """
    steps = [FlowStep.of(s, check.component) for s in check.steps]
    if not ctx.accounts:
        return await run_steps(steps, ctx)
    runs = await asyncio.gather(*(run_steps(steps, ctx.for_account(a)) for a in ctx.accounts))
    return merge_accounts(list(runs))


def merge_accounts(runs: list[Outcome]) -> Outcome:
    """One Outcome for a run made as several accounts: it passes when every account passed.

    Each step is merged across the accounts that ran it: failed if any failed (its facts
    from the first that failed), with how many accounts ran it and how many failed it. The
    accounts' own Outcomes ride along in `accounts` for the verdict's per-account counts.
    """
    failed = [r for r in runs if not r.success]
    first = failed[0] if failed else runs[0]
    per_step: dict[str, list[StepResult]] = {}
    for run_result in runs:
        last = {s.name: s for s in run_result.steps}  # a step retried after a re-login
        for name, step in last.items():
            per_step.setdefault(name, []).append(step)
    steps = tuple(_merge_step(group) for group in per_step.values())
    message = first.message
    if failed:
        message = f"{len(failed)} of {len(runs)} accounts failed; first: {message}"
    return Outcome(steps, first.reason, message, first.failed_step, accounts=tuple(runs))


def _merge_step(group: list[StepResult]) -> StepResult:
    ran = [s for s in group if not s.cached]
    failed = [s for s in ran if not s.success]
    shown = failed[0] if failed else (ran[0] if ran else group[0])
    return replace(
        shown,
        success=not failed,
        duration=max(s.duration for s in group),
        cached=not ran,
        accounts=len(ran),
        accounts_failed=len(failed),
    )


async def run_steps(steps: Sequence[FlowStep], ctx: ProbeContext) -> Outcome:
    """Run steps in order, reporting the first critical failure; cleanup steps always run.

    Every step, and every login made again on the way, goes to the run's recorder: its
    steps are the Outcome's.
    """
    state = _FlowState()
    if ctx.account:
        state.variables["account"] = ctx.account
    failed: StepResult | None = None
    for step in steps:
        if failed is not None and not step.always_run:
            continue
        ctx.recorder.begin(step.name)
        if step.poll is None:
            result = await _run_once(step, state, ctx)
        else:
            result = await _run_polled(step, step.poll, state, ctx)
        ctx.recorder.done(result)
        if failed is None and not result.success and step.critical:
            failed = result
    if failed is None:
        return Outcome(ctx.recorder.steps, account=ctx.account)
    reason = failed.reason or Reason.ERROR
    return Outcome(ctx.recorder.steps, reason, failed.message, failed.name, account=ctx.account)


async def _run_polled(
    step: FlowStep, poll: Poll, state: _FlowState, ctx: ProbeContext
) -> StepResult:
    """Run the step, and again every `poll.every` until it passes or `poll.within` is up."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        result = await _run_once(step, state, ctx)
        waited = loop.time() - started
        late = waited + poll.every > poll.within or ctx.remaining() <= poll.every
        if result.success or late:
            slow = poll.degraded_after is not None and waited > poll.degraded_after
            return replace(result, waited=waited, slow=slow)
        ctx.recorder.begin(step.name, stage=lambda: "waiting to poll again")
        await asyncio.sleep(poll.every)


async def _run_once(step: FlowStep, state: _FlowState, ctx: ProbeContext) -> StepResult:
    if step.session is not None:
        return await _login(step, state, ctx)
    outcome = await _request(step, state, ctx)
    facts = outcome.result.facts
    refused = isinstance(facts, HttpFacts) and facts.status_code == _UNAUTHORIZED
    if refused and state.cached_logins and not state.relogged:
        # A cached token was refused: log in again once, then retry this step once.
        state.relogged = True
        for session, login_step in list(state.cached_logins.items()):
            ctx.sessions.invalidate(session)
            ctx.sessions.record(session, "rejected")
            login = await _login(login_step, state, ctx)
            ctx.recorder.done(login)
            if not login.success:
                return outcome.result
        outcome = await _request(step, state, ctx)
    return outcome.result


async def _request(step: FlowStep, state: _FlowState, ctx: ProbeContext) -> StepRun:
    outcome = await run_step(step.name, step.spec, state.variables, ctx, step.critical)
    state.variables.update(outcome.variables)  # its secret values widened ctx.redactor
    return outcome


async def _login(step: FlowStep, state: _FlowState, ctx: ProbeContext) -> StepResult:
    """Reuse the session's cached login, or log in and cache what the step extracts."""
    assert step.session is not None
    # Each account of a pool has sessions of its own; events are counted per session name.
    session = f"{step.session}@{ctx.account}" if ctx.account else step.session
    async with ctx.sessions.lock(session):
        fresh = step.component in ctx.fresh_for
        cached = None if fresh else ctx.sessions.get(session)
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

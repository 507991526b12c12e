"""The runner alone makes the Result: from the probe's Outcome, or, when it cuts an attempt
short, from what the probe told its recorder (the steps done, the step under way)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from prober.engine.runner import RunEnvironment, run_check
from prober.probes import registry
from prober.probes import step as step_module
from prober.probes.context import ProbeContext
from prober.result import HttpFacts, Outcome, Phases, Reason, StepResult
from tests.support.checks import http_check
from tests.support.servers import serve_app

ProbeFn = Callable[[Any, ProbeContext], Awaitable[Outcome]]
FIRST = StepResult("first", True, 0.001, facts=HttpFacts(200))


@pytest.fixture
def probe_as(monkeypatch: pytest.MonkeyPatch) -> Callable[[ProbeFn], None]:
    """Make the http kind's probe the given function for this test."""

    def install(probe: ProbeFn) -> None:
        monkeypatch.setitem(registry.KINDS, "http", replace(registry.KINDS["http"], run=probe))

    return install


async def _hang() -> None:
    await asyncio.Event().wait()


async def test_a_run_cut_at_its_deadline_keeps_the_steps_done_and_names_where_it_hung(
    env: RunEnvironment, probe_as: Callable[[ProbeFn], None]
) -> None:
    async def hangs_in_second(check: Any, ctx: ProbeContext) -> Outcome:
        ctx.recorder.begin("first")
        ctx.recorder.done(FIRST)
        ctx.recorder.begin("second", stage=lambda: "waiting for the reply")
        await _hang()
        raise AssertionError("unreachable")

    probe_as(hangs_in_second)
    result = await run_check(http_check("http://127.0.0.1:9/", timeout=0.2), env)
    assert (result.success, result.reason, result.failed_step) == (False, Reason.TIMEOUT, "second")
    assert result.message == "deadline reached while waiting for the reply"
    assert [(s.name, s.success) for s in result.steps] == [("first", True), ("second", False)]
    assert result.steps[1].facts is None  # the probe gave no way to finish it
    assert result.failures[0].failed_step == "second"


async def test_a_cut_step_is_ended_by_the_probe_so_its_facts_are_kept(
    env: RunEnvironment, probe_as: Callable[[ProbeFn], None]
) -> None:
    async def hangs_after_connecting(check: Any, ctx: ProbeContext) -> Outcome:
        def finish(reason: Reason, message: str) -> StepResult:
            facts = HttpFacts(phases=Phases(connect=0.01))
            return StepResult("request", False, 0.2, reason, message, facts=facts)

        ctx.recorder.begin("request", finish=finish, stage=lambda: "connecting")
        await _hang()
        raise AssertionError("unreachable")

    probe_as(hangs_after_connecting)
    result = await run_check(http_check("http://127.0.0.1:9/", timeout=0.2), env)
    (step,) = result.steps
    assert step.facts == HttpFacts(phases=Phases(connect=0.01))
    assert step.message == result.message == "deadline reached while connecting"


async def test_a_run_cut_between_steps_says_the_deadline_it_reached(
    env: RunEnvironment, probe_as: Callable[[ProbeFn], None]
) -> None:
    async def hangs_outside_any_step(check: Any, ctx: ProbeContext) -> Outcome:
        await _hang()
        raise AssertionError("unreachable")

    probe_as(hangs_outside_any_step)
    result = await run_check(http_check("http://127.0.0.1:9/", timeout=0.2), env)
    assert (result.reason, result.failed_step, result.steps) == (Reason.TIMEOUT, "", ())
    assert result.message == "deadline of 0.2s reached"


async def test_a_probe_that_raises_mid_flow_keeps_the_steps_done(
    env: RunEnvironment, probe_as: Callable[[ProbeFn], None]
) -> None:
    async def breaks_in_second(check: Any, ctx: ProbeContext) -> Outcome:
        ctx.recorder.begin("first")
        ctx.recorder.done(FIRST)
        ctx.recorder.begin("second")
        raise KeyError("a bug")

    probe_as(breaks_in_second)
    result = await run_check(http_check("http://127.0.0.1:9/"), env)
    assert (result.reason, result.failed_step) == (Reason.INTERNAL, "second")
    assert result.message == result.steps[-1].message == "internal error: KeyError"
    assert [s.name for s in result.steps] == ["first", "second"]


async def test_the_result_is_made_of_the_outcome_and_the_runners_clock(
    env: RunEnvironment, probe_as: Callable[[ProbeFn], None]
) -> None:
    async def passes(check: Any, ctx: ProbeContext) -> Outcome:
        await asyncio.sleep(0.05)
        return Outcome((FIRST,))

    probe_as(passes)
    seen: list[float] = []

    def lagged(since: float) -> bool:
        seen.append(since)
        return True

    result = await run_check(http_check("http://127.0.0.1:9/"), env, loop_lagged=lagged)
    assert result.success and result.steps == (FIRST,) and result.attempts == 1
    assert result.duration >= 0.05 and result.started_at > 0
    assert result.loop_lag_exceeded and len(seen) == 1


@pytest.mark.parametrize(
    ("degraded_latency", "slow_step", "degraded"),
    [(None, False, False), (0.01, False, True), (None, True, True)],
    ids=["fast", "over-degraded-latency", "slow-polled-step"],
)
async def test_the_runner_judges_degraded_from_its_own_clock_and_slow_steps(
    env: RunEnvironment,
    probe_as: Callable[[ProbeFn], None],
    degraded_latency: float | None,
    slow_step: bool,
    degraded: bool,
) -> None:
    async def passes(check: Any, ctx: ProbeContext) -> Outcome:
        await asyncio.sleep(0.05)
        return Outcome((replace(FIRST, slow=slow_step),))

    probe_as(passes)
    settings: dict[str, Any] = {"degraded_latency": degraded_latency} if degraded_latency else {}
    result = await run_check(http_check("http://127.0.0.1:9/", **settings), env)
    assert result.degraded is degraded


async def test_a_pooled_outcome_gives_each_account_a_result(
    env: RunEnvironment, probe_as: Callable[[ProbeFn], None]
) -> None:
    failed = StepResult("first", False, 0.001, Reason.STATUS, "status 503", HttpFacts(503))

    async def two_accounts(check: Any, ctx: ProbeContext) -> Outcome:
        return Outcome(
            (failed,),
            Reason.STATUS,
            "1 of 2 accounts failed; first: status 503",
            "first",
            accounts=(
                Outcome((FIRST,), account="user-1"),
                Outcome((failed,), Reason.STATUS, "status 503", "first", account="user-2"),
            ),
        )

    probe_as(two_accounts)
    result = await run_check(http_check("http://127.0.0.1:9/"), env)
    assert [(r.account, r.success, r.failed_step) for r in result.accounts] == [
        ("user-1", True, ""),
        ("user-2", False, "first"),
    ]
    assert result.accounts_failed == 1
    assert all(r.started_at == result.started_at for r in result.accounts)


async def test_a_run_is_timed_to_its_last_byte_not_to_when_its_coroutine_resumed(
    env: RunEnvironment, probe_as: Callable[[ProbeFn], None]
) -> None:
    async def answered_then_held(check: Any, ctx: ProbeContext) -> Outcome:
        ctx.recorder.begin("first")
        ctx.recorder.last_byte = time.perf_counter()  # the transport callback's stamp
        await asyncio.sleep(0.3)  # the loop busy elsewhere before this run goes on
        ctx.recorder.done(FIRST)
        return Outcome((FIRST,))

    probe_as(answered_then_held)
    began = time.perf_counter()
    result = await run_check(http_check("http://127.0.0.1:9/"), env)
    assert result.duration + 0.3 <= time.perf_counter() - began


async def test_a_last_step_without_a_stamp_is_timed_to_the_end_of_the_run(
    env: RunEnvironment, probe_as: Callable[[ProbeFn], None]
) -> None:
    async def stamped_then_unstamped(check: Any, ctx: ProbeContext) -> Outcome:
        ctx.recorder.begin("first")
        ctx.recorder.last_byte = time.perf_counter()
        ctx.recorder.done(FIRST)
        ctx.recorder.begin("second")  # a step that stamps nothing (a wait, a tcp dialogue)
        await asyncio.sleep(0.3)
        ctx.recorder.done(replace(FIRST, name="second"))
        return Outcome((FIRST, replace(FIRST, name="second")))

    probe_as(stamped_then_unstamped)
    result = await run_check(http_check("http://127.0.0.1:9/"), env)
    assert result.duration >= 0.3


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_an_http_run_ends_its_clock_at_the_answers_last_byte(
    env: RunEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    judge = step_module._judge

    def slow_judge(*args: Any) -> Any:
        time.sleep(0.3)  # work of ours after the answer arrived: not the target's latency
        return judge(*args)

    monkeypatch.setattr(step_module, "_judge", slow_judge)
    app = web.Application()
    app.router.add_get("/", _ok)
    runner, base = await serve_app(app)
    try:
        began = time.perf_counter()
        result = await run_check(http_check(f"{base}/"), env)
        wall = time.perf_counter() - began
    finally:
        await runner.cleanup()
    assert result.success
    assert result.duration + 0.3 <= wall
    assert result.duration >= result.steps[0].duration

"""Run one check once: own its deadline, clock, retries and Result around the kind's probe.

A probe only answers with an Outcome (its steps, reason and message); this is the one place
that makes a Result of it, adding when the run started and how long it took, the attempts
and failures, whether it was degraded and whether the event loop lagged meanwhile. Every
started run ends in a Result, whatever the probe raises, so a bug in a probe shows as a
failed check (reason `internal`), never as a check that silently stopped recording.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from prober.config.model import Check, FlowCheck
from prober.config.secrets import Redactor
from prober.config.templates import TemplateValues
from prober.probes.context import HttpClients, ProbeContext
from prober.probes.net.deadline import Deadline
from prober.probes.net.tls import TlsBlock, tls_blocks
from prober.probes.recorder import StepRecorder
from prober.probes.registry import probe_for
from prober.probes.sessions import SessionStore
from prober.result import AttemptFailure, Outcome, Reason, Result

log = logging.getLogger("prober.engine.runner")

# The attempt is cut this long after its deadline. The http step runner bounds each request
# by the deadline itself (so a timeout names its phase and a flow's cleanup steps still run):
# its own timeout must come first.
_DEADLINE_GRACE = 0.05
# Whether the event loop was over its lag budget at any time since a perf_counter instant.
LagWatch = Callable[[float], bool]


@dataclass
class RunEnvironment:
    """What every run shares: HTTP clients, template values, secrets to hide, sessions.

    The redactor (every encoded form of every secret) is built once here, not per message.
    """

    clients: HttpClients
    values: TemplateValues
    sensitive: frozenset[str]
    sessions: SessionStore
    redactor: Redactor = field(init=False)
    # (check, exception type) whose traceback was logged at error level already.
    reported: set[tuple[str, str]] = field(init=False, default_factory=set)

    # Where each pooled check's next run starts in its account pool.
    rotation: dict[str, int] = field(init=False, default_factory=dict)
    # Each check's `tls:` blocks (`tls_blocks`) by name, with the check value they were
    # taken from: a run asks `HttpClients.tls_done` for them without building the set again
    # (hashing a pydantic model per block). Whether they are built only HttpClients knows.
    _tls_blocks: dict[str, tuple[Check, frozenset[TlsBlock]]] = field(
        init=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self.redactor = Redactor.of(self.sensitive)

    def tls_blocks_of(self, check: Check) -> frozenset[TlsBlock]:
        """The check's `tls:` blocks, worked out once per check value."""
        known = self._tls_blocks.get(check.name)
        if known is None or known[0] is not check:
            known = self._tls_blocks[check.name] = (check, tls_blocks(check))
        return known[1]

    def accounts_for(self, check: Check) -> tuple[str, ...]:
        """The next `fanout` accounts of a pooled flow, rotating so that the whole pool is
        covered over time; () for any other check. The first run starts at random."""
        # Not getattr: a pydantic model raises (and catches) for an attribute it lacks.
        names = check.account_names if isinstance(check, FlowCheck) else ()
        if not names:
            return ()
        assert isinstance(check, FlowCheck)
        fanout = min(check.fanout, len(names))
        start = self.rotation.get(check.name)
        if start is None:
            start = random.randrange(len(names))
        self.rotation[check.name] = (start + fanout) % len(names)
        return tuple(names[(start + k) % len(names)] for k in range(fanout))


async def run_check(
    check: Check,
    env: RunEnvironment,
    fresh_for: frozenset[str] = frozenset(),
    loop_lagged: LagWatch | None = None,
) -> Result:
    """Run the check with its timeout per attempt and its retries; count every failed attempt.

    Session steps of the components in `fresh_for` log in again instead of reusing a cached
    login (a run made to re-check those components). The Result is timed by its last
    attempt; `loop_lagged` says whether the event loop lagged while any attempt ran.
    """
    since = time.perf_counter()
    failures: list[AttemptFailure] = []
    attempts = 0
    accounts = env.accounts_for(check)
    while True:
        attempts += 1
        attempt = await _attempt(check, env, fresh_for, accounts)
        outcome = attempt.outcome
        passed = outcome.success
        if passed or attempts > check.retries:
            break
        failures.append(AttemptFailure(outcome.reason or Reason.ERROR, outcome.failed_step))
        if check.retry_backoff:
            await asyncio.sleep(check.retry_backoff * attempts)
    if not passed:
        failures.append(AttemptFailure(outcome.reason or Reason.ERROR, outcome.failed_step))
    slow = bool(check.degraded_latency and attempt.duration > check.degraded_latency)
    # A write that took longer than its step's `poll.degraded_after` to show is slow too.
    degraded = passed and (slow or any(step.slow for step in outcome.steps))
    return _result(
        check.name,
        attempt,
        outcome,
        attempts=attempts,
        failures=tuple(failures),
        degraded=degraded,
        loop_lag_exceeded=loop_lagged is not None and loop_lagged(since),
    )


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One attempt's Outcome and its clock: when it started (unix) and how long it took."""

    outcome: Outcome
    started_at: float
    duration: float


def _result(
    check_name: str,
    attempt: _Attempt,
    outcome: Outcome,
    attempts: int = 1,
    failures: tuple[AttemptFailure, ...] = (),
    degraded: bool = False,
    loop_lag_exceeded: bool = False,
) -> Result:
    """The Result of an attempt's Outcome; a pooled run's accounts each get one too."""
    return Result(
        check=check_name,
        success=outcome.success,
        duration=attempt.duration,
        started_at=attempt.started_at,
        reason=outcome.reason,
        message=outcome.message,
        failed_step=outcome.failed_step,
        steps=outcome.steps,
        attempts=attempts,
        failures=failures,
        degraded=degraded,
        loop_lag_exceeded=loop_lag_exceeded,
        accounts=tuple(_result(check_name, attempt, run) for run in outcome.accounts)
        if outcome.accounts
        else (),
        account=outcome.account,
    )


async def _attempt(
    check: Check,
    env: RunEnvironment,
    fresh_for: frozenset[str],
    accounts: tuple[str, ...] = (),
) -> _Attempt:
    """One attempt within the check's timeout; an Outcome whatever happens but cancellation."""
    assert check.timeout is not None
    # SSL contexts are built at apply time; a run never pays for one inside its clock.
    blocks = env.tls_blocks_of(check)
    if not env.clients.tls_done(blocks):
        await env.clients.tls_ready(blocks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + check.timeout
    recorder = StepRecorder()
    ctx = ProbeContext(env.clients, deadline, env.values, env.redactor, env.sessions, recorder)
    ctx.fresh_for = fresh_for
    ctx.accounts = accounts
    started_at = time.time()
    start = time.perf_counter()
    late = Deadline(loop, deadline + _DEADLINE_GRACE)  # as asyncio.timeout_at, for less
    try:
        outcome = await probe_for(check)(check, ctx)
        # Timed to the last byte where the probe stamped it (see StepRecorder.last_byte).
        if recorder.last_byte > start:
            return _Attempt(outcome, started_at, recorder.last_byte - start)
    except asyncio.CancelledError:
        if not late.reached():
            raise  # from outside: a shutdown, a reload
        outcome = _timed_out(check, ctx, start)
    except TimeoutError:  # a probe's own timeout let through counts as the deadline too
        outcome = _timed_out(check, ctx, start)
    except Exception as exc:  # a bug in a probe: recorded as a failure, never lost
        _report(check, env, ctx, exc)
        message = _internal(exc)
        outcome = _cut_short(ctx, start, Reason.INTERNAL, message, message)
    finally:
        late.close()
    return _Attempt(outcome, started_at, time.perf_counter() - start)


def _timed_out(check: Check, ctx: ProbeContext, start: float) -> Outcome:
    reached = f"deadline of {check.timeout:g}s reached"
    return _cut_short(ctx, start, Reason.TIMEOUT, "deadline reached", reached)


def _internal(exc: Exception) -> str:
    """The message of an unexpected exception: its type only, as its text may hold secrets."""
    return f"internal error: {type(exc).__name__}"


def _cut_short(
    ctx: ProbeContext, start: float, reason: Reason, step_message: str, run_message: str
) -> Outcome:
    """The Outcome of an attempt the probe did not finish: the steps it had done, and the one
    it was in failed (as far as it got, where the probe told the recorder how to end it)."""
    recorder = ctx.recorder
    step = recorder.interrupt(reason, step_message, time.perf_counter() - start)
    if step is None:
        return Outcome(recorder.steps, reason, run_message)
    return Outcome((*recorder.steps, step), reason, step.message, step.name)


def _report(check: Check, env: RunEnvironment, ctx: ProbeContext, exc: Exception) -> None:
    """Log the traceback, secrets hidden: at error level once per check and type, then debug."""
    key = (check.name, type(exc).__name__)
    level = logging.DEBUG if key in env.reported else logging.ERROR
    env.reported.add(key)
    if not log.isEnabledFor(level):
        return
    text = ctx.redactor("".join(traceback.format_exception(exc)))
    log.log(
        level,
        "probe raised an unexpected exception",
        extra={
            "check": check.name,
            "step": ctx.recorder.current,
            "reason": str(Reason.INTERNAL),
            "exception": type(exc).__name__,
            "traceback": text,
        },
    )

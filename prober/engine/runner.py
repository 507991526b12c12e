"""Run one check once: own its deadline, retries and timing around the kind's probe.

Every started run ends in a Result, whatever the probe raises: this is the one place that
promises it, so a bug in a probe shows as a failed check (reason `internal`), never as a
check that silently stopped recording.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
from dataclasses import dataclass, field, replace

from prober.config.model import Check
from prober.config.secrets import Redactor
from prober.config.templates import TemplateValues
from prober.probes import probe_for
from prober.probes.context import HttpClients, ProbeContext
from prober.probes.sessions import SessionStore
from prober.result import AttemptFailure, Reason, Result, StepResult

log = logging.getLogger("prober.engine.runner")

# The probe enforces the deadline itself; this grace only catches a probe that did not.
_DEADLINE_GRACE = 0.05


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

    def __post_init__(self) -> None:
        self.redactor = Redactor.of(self.sensitive)

    def accounts_for(self, check: Check) -> tuple[str, ...]:
        """The next `fanout` accounts of a pooled flow, rotating so that the whole pool is
        covered over time; () for any other check. The first run starts at random."""
        names: tuple[str, ...] = getattr(check, "account_names", ())
        if not names:
            return ()
        fanout = min(getattr(check, "fanout", 1), len(names))
        start = self.rotation.get(check.name)
        if start is None:
            start = random.randrange(len(names))
        self.rotation[check.name] = (start + fanout) % len(names)
        return tuple(names[(start + k) % len(names)] for k in range(fanout))


async def run_check(
    check: Check, env: RunEnvironment, fresh_for: frozenset[str] = frozenset()
) -> Result:
    """Run the check with its timeout per attempt and its retries; count every failed attempt.

    Session steps of the components in `fresh_for` log in again instead of reusing a cached
    login (a run made to re-check those components).
    """
    failures: list[AttemptFailure] = []
    attempts = 0
    accounts = env.accounts_for(check)
    while True:
        attempts += 1
        result = await _attempt(check, env, check.timeout, fresh_for, accounts)
        if result.success or attempts > check.retries:
            break
        failures.append(AttemptFailure(result.reason or Reason.ERROR, result.failed_step))
        if check.retry_backoff:
            await asyncio.sleep(check.retry_backoff * attempts)
    if not result.success:
        failures.append(AttemptFailure(result.reason or Reason.ERROR, result.failed_step))
    slow = bool(check.degraded_latency and result.duration > check.degraded_latency)
    # A write that took longer than its step's `poll.degraded_after` to show is slow too.
    degraded = result.success and (slow or any(step.slow for step in result.steps))
    return replace(result, attempts=attempts, failures=tuple(failures), degraded=degraded)


async def _attempt(
    check: Check,
    env: RunEnvironment,
    budget: float,
    fresh_for: frozenset[str],
    accounts: tuple[str, ...] = (),
) -> Result:
    """One attempt within `budget` seconds; a Result whatever happens but cancellation."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    ctx = ProbeContext(env.clients, deadline, env.values, env.redactor, env.sessions)
    ctx.fresh_for = fresh_for
    ctx.accounts = accounts
    started_at = time.time()
    start = time.perf_counter()
    try:
        async with asyncio.timeout_at(deadline + _DEADLINE_GRACE):
            return await probe_for(check)(check, ctx)
    except TimeoutError:
        reached = f"deadline of {budget:g}s reached"
        return _cut_short(check, ctx, start, started_at, Reason.TIMEOUT, reached)
    except Exception as exc:  # a bug in a probe: recorded as a failure, never lost
        _report(check, env, ctx, exc)
        return _cut_short(check, ctx, start, started_at, Reason.INTERNAL, _internal(exc))


def _internal(exc: Exception) -> str:
    """The message of an unexpected exception: its type only, as its text may hold secrets."""
    return f"internal error: {type(exc).__name__}"


def _cut_short(
    check: Check,
    ctx: ProbeContext,
    start: float,
    started_at: float,
    reason: Reason,
    message: str,
) -> Result:
    """The Result of a run the probe did not finish: the steps done, the current one failed."""
    step = ctx.current_step
    steps = list(ctx.progress)
    elapsed = time.perf_counter() - start
    if step:
        shown = "deadline reached" if reason == Reason.TIMEOUT else message
        steps.append(StepResult(step, False, elapsed, reason, shown))
    return Result(
        check=check.name,
        success=False,
        duration=elapsed,
        started_at=started_at,
        reason=reason,
        message=message,
        failed_step=step,
        steps=tuple(steps),
    )


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
            "step": ctx.current_step,
            "reason": str(Reason.INTERNAL),
            "exception": type(exc).__name__,
            "traceback": text,
        },
    )

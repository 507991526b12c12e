"""What the confirmed state of every check says together: ok, degraded, a component down,
platform-wide, or the prober itself impaired; and how far the trouble reaches (its scope)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

CANARY = "canary"


class VerdictState(StrEnum):
    """The daemon's verdict, exported as `prober_verdict{state}`; worst first."""

    PROBER_IMPAIRED = "prober_impaired"
    PLATFORM_WIDE = "platform_wide"
    COMPONENT_DOWN = "component_down"
    PARTIAL = "partial"
    DEGRADED = "degraded"
    PENDING = "pending"
    OK = "ok"


class Scope(StrEnum):
    """How far what is wrong reaches, as this prober sees it (`prober_verdict_scope`).

    `vantage` (this vantage point alone sees trouble the others do not) needs every
    vantage's view: the Prometheus rules derive it, the daemon never reports it.
    """

    NONE = "none"
    PROBER = "prober"
    VANTAGE = "vantage"
    COMPONENT = "component"
    PLATFORM = "platform"


class Condition(StrEnum):
    """One component's state (`prober_component_state{component,state}`)."""

    OK = "ok"
    DEGRADED = "degraded"
    PARTIAL = "partial"
    DOWN = "down"
    PENDING = "pending"


class CheckCondition(StrEnum):
    """One check's confirmed state, as /api/status and the status page show it."""

    OK = "ok"
    FAILING = "failing"
    PENDING = "pending"

    @classmethod
    def of(cls, success: bool | None) -> CheckCondition:
        """Pending while unknown (not run yet, or stale), else ok or failing."""
        if success is None:
            return cls.PENDING
        return cls.OK if success else cls.FAILING


SCOPE_OF = {
    VerdictState.PROBER_IMPAIRED: Scope.PROBER,
    VerdictState.PLATFORM_WIDE: Scope.PLATFORM,
    VerdictState.COMPONENT_DOWN: Scope.COMPONENT,
    VerdictState.PARTIAL: Scope.COMPONENT,
    VerdictState.DEGRADED: Scope.COMPONENT,
    VerdictState.PENDING: Scope.NONE,
    VerdictState.OK: Scope.NONE,
}


@dataclass(frozen=True, slots=True)
class CheckState:
    """The confirmed state of one check; `success` is None while unknown (not run, stale)."""

    name: str
    component: str
    success: bool | None
    degraded: bool = False
    # Failing for a share of the accounts it samples (a pooled flow), not for all of them.
    partial: bool = False


@dataclass(frozen=True, slots=True)
class ComponentState:
    name: str
    state: Condition
    failing: int
    total: int


@dataclass(frozen=True, slots=True)
class Verdict:
    state: VerdictState
    summary: str
    components: tuple[ComponentState, ...] = field(default_factory=tuple)

    @property
    def scope(self) -> Scope:
        return SCOPE_OF[self.state]


@dataclass(slots=True)
class Tally:
    """Counts over one component's known votes: kept up to date as states change, so
    judging the platform costs one step per component, not one per check."""

    known: int = 0
    failing: int = 0
    degraded: int = 0
    partial: int = 0

    def add(self, check: CheckState, sign: int = 1) -> None:
        """Count the check in (sign 1) or out (sign -1); unknown checks are not counted."""
        if check.success is None:
            return
        self.known += sign
        self.failing += sign if not check.success else 0
        self.degraded += sign if check.degraded else 0
        self.partial += sign if check.partial and check.success else 0

    def state(self) -> Condition:
        """Down when most known checks fail for every account they try; partial when one
        fails for a share of its accounts; degraded when one fails or is slow."""
        if not self.known:
            return Condition.PENDING
        if self.failing * 2 > self.known:
            return Condition.DOWN
        if self.partial:
            return Condition.PARTIAL
        return Condition.DEGRADED if self.failing or self.degraded else Condition.OK


def tally(checks: Iterable[CheckState]) -> dict[str, Tally]:
    """Per-component counts of these checks (the canary under its own component)."""
    tallies: dict[str, Tally] = {}
    for check in checks:
        tallies.setdefault(check.component, Tally()).add(check)
    return tallies


def compute_verdict(
    checks: Iterable[CheckState], loop_lag_p99: float, lag_budget: float
) -> Verdict:
    """Judge the platform from the confirmed state of every check (see `judge`)."""
    return judge(tally(checks), loop_lag_p99, lag_budget)


def judge(
    tallies: Mapping[str, Tally],
    loop_lag_p99: float,
    lag_budget: float,
    held: Collection[str] = (),
) -> Verdict:
    """Judge the platform from per-component counts.

    A component is down when more than half of its known checks fail, partial when a check
    fails for a share of its accounts, pending while none is known; two or more components
    down or partial is platform-wide (as in Dec 2022: not all users, several components).
    When most known canaries fail, or the event loop lags, the prober's own view cannot be
    trusted, and that wins; one canary failing out of several is not enough, as a canary is
    a check like any other and can fail on its own. A `held` component is down but no canary
    run has vouched for the prober since it began to fail: it is pending until the prober
    has shown it is not cut off.
    """
    components = tuple(
        ComponentState(name, Condition.PENDING if name in held else t.state(), t.failing, t.known)
        for name, t in sorted(tallies.items())
        if name != CANARY
    )
    canary = tallies.get(CANARY)
    why = ""
    if canary is not None and canary.state() is Condition.DOWN:
        why = f"{canary.failing} of {canary.known} canary checks failing"
    elif loop_lag_p99 > lag_budget:
        why = f"event loop lag p99 {loop_lag_p99 * 1000:.0f} ms over budget"
    if why:
        return Verdict(VerdictState.PROBER_IMPAIRED, f"prober impaired: {why}", components)
    down = [c.name for c in components if c.state is Condition.DOWN]
    partial = [c.name for c in components if c.state is Condition.PARTIAL]
    if len(down) + len(partial) >= 2:
        what = [f"{n} down" for n in down] + [f"{n} failing for some accounts" for n in partial]
        summary = f"platform-wide: {', '.join(what)}"
        return Verdict(VerdictState.PLATFORM_WIDE, summary, components)
    if down:
        return Verdict(VerdictState.COMPONENT_DOWN, f"component down: {down[0]}", components)
    if partial:
        summary = f"partial: {partial[0]} failing for a share of accounts"
        return Verdict(VerdictState.PARTIAL, summary, components)
    slow = [c.name for c in components if c.state is Condition.DEGRADED]
    if slow:
        return Verdict(VerdictState.DEGRADED, f"degraded: {', '.join(slow)}", components)
    pending = [c.name for c in components if c.state is Condition.PENDING]
    if pending or not components:
        names = ", ".join(pending) if pending else "no checks"
        summary = f"pending: no confirmed recent result for {names}"
        return Verdict(VerdictState.PENDING, summary, components)
    return Verdict(VerdictState.OK, "all components ok", components)

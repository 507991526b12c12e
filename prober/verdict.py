"""What the latest results of all checks say together: ok, degraded, component down,
platform-wide, or the prober itself impaired."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CANARY = "canary"


@dataclass(frozen=True, slots=True)
class CheckState:
    """The latest known state of one check; `success` is None before its first run."""

    name: str
    component: str
    success: bool | None
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class ComponentState:
    name: str
    state: str
    failing: int
    total: int


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str
    summary: str
    components: tuple[ComponentState, ...] = field(default_factory=tuple)


@dataclass(slots=True)
class Tally:
    """Counts over one component's checks that have run: kept up to date as results arrive,
    so judging the platform costs one step per component, not one per check."""

    known: int = 0
    failing: int = 0
    degraded: int = 0

    def add(self, check: CheckState, sign: int = 1) -> None:
        """Count the check in (sign 1) or out (sign -1)."""
        if check.success is None:
            return
        self.known += sign
        self.failing += sign if not check.success else 0
        self.degraded += sign if check.degraded else 0

    def state(self) -> str:
        if self.known and self.failing * 2 > self.known:
            return "down"
        return "degraded" if self.failing or self.degraded else "ok"


def tally(checks: Iterable[CheckState]) -> dict[str, Tally]:
    """Per-component counts of these checks (the canary under its own component)."""
    tallies: dict[str, Tally] = {}
    for check in checks:
        tallies.setdefault(check.component, Tally()).add(check)
    return tallies


def compute_verdict(
    checks: Iterable[CheckState], loop_lag_p99: float, lag_budget: float
) -> Verdict:
    """Judge the platform from the latest state of every check (see `judge`)."""
    return judge(tally(checks), loop_lag_p99, lag_budget)


def judge(tallies: Mapping[str, Tally], loop_lag_p99: float, lag_budget: float) -> Verdict:
    """Judge the platform from per-component counts.

    A component is down when more than half of its checks that have run are failing; the
    platform is down across the board when two or more components are. A failing canary or
    a lagging event loop means the prober's own view cannot be trusted, and wins.
    """
    canary = tallies.get(CANARY)
    canary_failing = canary is not None and canary.failing > 0
    components = tuple(
        ComponentState(name, t.state(), t.failing, t.known)
        for name, t in sorted(tallies.items())
        if name != CANARY
    )
    down = [c.name for c in components if c.state == "down"]
    if canary_failing or loop_lag_p99 > lag_budget:
        why = (
            "canary check failing"
            if canary_failing
            else (f"event loop lag p99 {loop_lag_p99 * 1000:.0f} ms over budget")
        )
        return Verdict("prober_impaired", f"prober impaired: {why}", components)
    if len(down) >= 2:
        return Verdict("platform_wide", f"platform-wide: {', '.join(down)} down", components)
    if down:
        return Verdict("component_down", f"component down: {down[0]}", components)
    if any(c.state != "ok" for c in components):
        slow = [c.name for c in components if c.state != "ok"]
        return Verdict("degraded", f"degraded: {', '.join(slow)}", components)
    return Verdict("ok", "all components ok", components)

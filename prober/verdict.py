"""What the latest results of all checks say together: ok, degraded, component down,
platform-wide, or the prober itself impaired."""

from __future__ import annotations

from collections.abc import Iterable
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


def compute_verdict(
    checks: Iterable[CheckState], loop_lag_p99: float, lag_budget: float
) -> Verdict:
    """Judge the platform from the latest results.

    A component is down when more than half of its checks that have run are failing; the
    platform is down across the board when two or more components are. A failing canary or
    a lagging event loop means the prober's own view cannot be trusted, and wins.
    """
    by_component: dict[str, list[CheckState]] = {}
    canary_failing = False
    for check in checks:
        if check.component == CANARY:
            canary_failing |= check.success is False
        else:
            by_component.setdefault(check.component, []).append(check)
    components = tuple(
        _component_state(name, states) for name, states in sorted(by_component.items())
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


def _component_state(name: str, states: list[CheckState]) -> ComponentState:
    known = [s for s in states if s.success is not None]
    failing = sum(1 for s in known if not s.success)
    if known and failing * 2 > len(known):
        state = "down"
    elif failing or any(s.degraded for s in known):
        state = "degraded"
    else:
        state = "ok"
    return ComponentState(name, state, failing, len(known))

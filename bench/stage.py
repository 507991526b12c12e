"""One measured stage: a system probing the target at a fixed rate for a bounded window."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from bench.load import quantile
from bench.procs import Sample

# A stage "sustains" its rate when its p99 error stays under this, it completes nearly all
# the probes asked of it and nearly none fail.
ERROR_LIMIT = 0.015
MIN_DONE_SHARE = 0.95
MAX_FAILED_SHARE = 0.01


@dataclass(frozen=True, slots=True)
class TargetFigures:
    """How late the target itself answered during the window (its share of any error)."""

    answered: int
    late_p99: float

    @classmethod
    async def take(cls, session: aiohttp.ClientSession, base_url: str) -> TargetFigures:
        """Read and reset the target's counters."""
        async with session.get(f"{base_url}/-/stats") as response:
            data = await response.json(content_type=None)
        return cls(int(data["answered"]), float(data["late_p99"]))


@dataclass(frozen=True, slots=True)
class Stage:
    """What one system did at one offered rate, measured over one window."""

    system: str
    rate: float
    window: float
    done: int
    failed: int
    cpu: float
    errors: tuple[float, ...]
    target: TargetFigures
    other_core0: float
    busy_core1: float

    @classmethod
    def measured(
        cls,
        system: str,
        rate: float,
        start: Sample,
        end: Sample,
        done: int,
        failed: int,
        errors: list[float],
        target: TargetFigures,
    ) -> Stage:
        window = end.at - start.at
        cpu = end.process_cpu - start.process_cpu
        core0 = end.core_busy[0] - start.core_busy[0]
        core1 = end.core_busy[1] - start.core_busy[1] if len(end.core_busy) > 1 else 0.0
        return cls(
            system=system,
            rate=rate,
            window=window,
            done=done,
            failed=failed,
            cpu=cpu,
            errors=tuple(sorted(errors)),
            target=target,
            other_core0=max(core0 - cpu, 0.0) / window,
            busy_core1=core1 / window,
        )

    @property
    def done_rate(self) -> float:
        return self.done / self.window

    @property
    def cpu_per_probe(self) -> float:
        return self.cpu / self.done if self.done else float("inf")

    def error(self, q: float) -> float:
        return quantile(self.errors, q) if self.errors else float("inf")

    @property
    def sustained(self) -> bool:
        return (
            self.done_rate >= MIN_DONE_SHARE * self.rate
            and self.failed <= MAX_FAILED_SHARE * max(self.done, 1)
            and self.error(0.99) < ERROR_LIMIT
        )

    def summary(self) -> str:
        return (
            f"{self.system:8} {self.rate:6.0f}/s: done {self.done_rate:6.0f}/s, "
            f"cpu {self.cpu_per_probe * 1000:.3f} ms/probe, error p50 "
            f"{self.error(0.5) * 1000:.2f} p99 {self.error(0.99) * 1000:.2f} ms "
            f"({len(self.errors)} samples), failed {self.failed}, target late p99 "
            f"{self.target.late_p99 * 1000:.2f} ms, other load on core 0 "
            f"{self.other_core0:.0%}, core 1 busy {self.busy_core1:.0%}"
        )

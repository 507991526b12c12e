"""Scripted outages: scenario files (YAML data) and the runner that replays them in time.

A scenario is a list of phases; each phase starts `at` seconds after the start (at speed 1)
and replaces every injected fault with its own. The runner is one asyncio task that sleeps to
loop-clock deadlines computed from the start, so phases never drift, whatever the speed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prober.config.located import ConfigError, error_below, validation_issues
from prober.config.read import MAX_CONFIG_BYTES, parse_document, read_bounded
from prober.sim.fault_spec import Component, FaultSpec, misplaced_fields

log = logging.getLogger(__name__)

_HISTORY_SIZE = 100
_MAX_ERRORS_SHOWN = 3


class ScenarioError(ValueError):
    """A scenario cannot be loaded; the message names the file, line and key, on one line."""


class Phase(BaseModel):
    """One step of an outage: from `at` seconds on, exactly these faults are injected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: float = Field(ge=0.0)
    name: str = Field(min_length=1)
    faults: dict[Component, FaultSpec] = Field(default_factory=dict)

    @field_validator("faults")
    @classmethod
    def _fields_fit(cls, faults: dict[Component, FaultSpec]) -> dict[Component, FaultSpec]:
        """A field that means nothing on its component is an error, as on the admin API."""
        misplaced = [
            ((component.value, name), why, getattr(spec, name))
            for component, spec in faults.items()
            for name, why in misplaced_fields(component, spec)
        ]
        if misplaced:
            raise error_below("Phase", misplaced)
        return faults


class Scenario(BaseModel):
    """A replayable outage; times are seconds at speed 1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    description: str = ""
    repeat: bool = False
    duration: float | None = Field(default=None, gt=0.0)
    phases: list[Phase] = Field(min_length=1)

    @field_validator("phases")
    @classmethod
    def _phases_in_order(cls, phases: list[Phase]) -> list[Phase]:
        """Phases must start at strictly increasing times, so their order is their timeline."""
        for index, (before, after) in enumerate(itertools.pairwise(phases), start=1):
            if after.at <= before.at:
                raise ValueError(
                    f"phases[{index}].at ({after.at:g}) must be later than "
                    f"phases[{index - 1}].at ({before.at:g})"
                )
        return phases

    @model_validator(mode="after")
    def _duration_fits(self) -> Scenario:
        """A repeating scenario needs a cycle length, and it must cover every phase."""
        if self.repeat and self.duration is None:
            raise ValueError("repeat: true needs duration (the length of one cycle, in seconds)")
        if self.duration is not None and self.duration <= self.phases[-1].at:
            raise ValueError(
                f"duration ({self.duration:g}) must be later than the last phase "
                f"({self.phases[-1].at:g})"
            )
        return self

    @property
    def length_s(self) -> float:
        """How long one pass lasts at speed 1: `duration`, or until the last phase starts."""
        return self.duration if self.duration is not None else self.phases[-1].at


def builtin_scenarios() -> list[str]:
    """Names of the scenarios shipped in prober/sim/scenarios/."""
    folder = resources.files("prober.sim") / "scenarios"
    return sorted(p.name.removesuffix(".yml") for p in folder.iterdir() if p.name.endswith(".yml"))


def load_scenario(name_or_path: str) -> Scenario:
    """Load a shipped scenario by name, or a YAML file by path; raise a located ScenarioError."""
    if name_or_path in builtin_scenarios():
        source = f"prober/sim/scenarios/{name_or_path}.yml"
        text = (resources.files("prober.sim") / "scenarios" / f"{name_or_path}.yml").read_text(
            encoding="utf-8"
        )
        return parse_scenario(text, source, default_name=name_or_path)
    path = Path(name_or_path)
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        known = ", ".join(builtin_scenarios())
        why = (exc.strerror or exc) if isinstance(exc, OSError) else "not UTF-8 text"
        raise ScenarioError(
            f"unknown scenario {name_or_path!r}: not a shipped one ({known}) "
            f"and not a readable file ({why})"
        ) from None
    return parse_scenario(text, str(path), default_name=path.stem)


def parse_scenario(text: str, source: str, default_name: str = "") -> Scenario:
    """Validate scenario YAML text; errors point at `source:line: key.path`."""
    try:
        doc = parse_document(text, source)
    except ConfigError as exc:
        raise ScenarioError("; ".join(str(issue) for issue in exc.issues)) from None
    if not isinstance(doc.data, dict):
        raise ScenarioError(
            f"{source}: expected a mapping with `phases:`, got {type(doc.data).__name__}"
        )
    try:
        return Scenario.model_validate({"name": default_name, **doc.data})
    except ValidationError as exc:
        issues = [str(issue) for issue in validation_issues(exc, doc, show_input=True)]
        more = len(issues) - _MAX_ERRORS_SHOWN
        shown = "; ".join(issues[:_MAX_ERRORS_SHOWN])
        raise ScenarioError(shown + (f"; and {more} more" if more > 0 else "")) from None


@dataclass(slots=True)
class _Replay:
    """One replay in progress: what runs, since when, and which phases were applied when."""

    scenario: Scenario
    speed: float
    started: float
    phase_index: int = -1
    cycle: int = 0
    finished: bool = False
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_HISTORY_SIZE))
    task: asyncio.Task[None] | None = None


class ScenarioRunner:
    """Replays one scenario at a time by calling `apply` with each phase's faults."""

    def __init__(self, apply: Callable[[Mapping[str, FaultSpec]], None]) -> None:
        self._apply = apply
        self._replay: _Replay | None = None

    async def start(self, scenario: Scenario, speed: float = 1.0) -> None:
        """Stop any replay, then start `scenario` now at `speed` (10 = ten times faster)."""
        if speed <= 0:
            raise ValueError("speed must be > 0")
        await self.stop()
        loop = asyncio.get_running_loop()
        replay = _Replay(scenario=scenario, speed=speed, started=loop.time())
        replay.task = loop.create_task(self._play(replay), name=f"scenario {scenario.name}")
        replay.task.add_done_callback(_log_crash)
        self._replay = replay

    async def stop(self) -> None:
        """Cancel the running replay, if any, and wait for it; faults are left as they are."""
        replay, self._replay = self._replay, None
        if replay is None or replay.task is None:
            return
        replay.task.cancel()
        try:
            await replay.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _play(self, replay: _Replay) -> None:
        """Apply each phase at its deadline, cycle after cycle when the scenario repeats."""
        loop = asyncio.get_running_loop()
        scenario, speed = replay.scenario, replay.speed
        for cycle in itertools.count():
            cycle_start = replay.started + cycle * scenario.length_s / speed
            for index, phase in enumerate(scenario.phases):
                await _sleep_until(loop, cycle_start + phase.at / speed)
                self._apply({c.value: spec for c, spec in phase.faults.items()})
                replay.phase_index, replay.cycle = index, cycle
                replay.history.append(
                    {
                        "cycle": cycle,
                        "index": index,
                        "name": phase.name,
                        "at": phase.at,
                        "applied_after_s": round(loop.time() - replay.started, 4),
                    }
                )
            if not scenario.repeat:
                break
        await _sleep_until(loop, replay.started + scenario.length_s / speed)
        replay.finished = True

    def status(self) -> dict[str, Any]:
        """The replay's state for `GET /-/scenario`: current phase, next one, history."""
        replay = self._replay
        if replay is None:
            return {"state": "idle"}
        now = asyncio.get_running_loop().time()
        scenario = replay.scenario
        return {
            "state": "finished" if replay.finished else "running",
            "name": scenario.name,
            "description": scenario.description,
            "speed": replay.speed,
            "repeat": scenario.repeat,
            "cycle": replay.cycle,
            "elapsed_s": round((now - replay.started) * replay.speed, 3),
            "phase": _phase_info(scenario, replay.phase_index),
            "next_phase": _next_phase(replay, now),
            "phases": [phase.name for phase in scenario.phases],
            "history": list(replay.history),
        }


def _phase_info(scenario: Scenario, index: int) -> dict[str, Any] | None:
    """The phase at `index` as JSON, or None before the first phase starts."""
    if index < 0:
        return None
    phase = scenario.phases[index]
    return {"index": index, "name": phase.name, "at": phase.at}


def _next_phase(replay: _Replay, now: float) -> dict[str, Any] | None:
    """The phase that comes next and how many real seconds until it starts."""
    scenario = replay.scenario
    index, cycle = replay.phase_index + 1, replay.cycle
    if index >= len(scenario.phases):
        if not scenario.repeat:
            return None
        index, cycle = 0, cycle + 1
    phase = scenario.phases[index]
    starts = replay.started + (cycle * scenario.length_s + phase.at) / replay.speed
    return {"index": index, "name": phase.name, "in_s": round(max(0.0, starts - now), 3)}


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """Sleep until a loop-clock deadline (one timer, no polling)."""
    delay = deadline - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


def _log_crash(task: asyncio.Task[None]) -> None:
    """A replay that dies of a bug must say so rather than silently freeze the faults."""
    if not task.cancelled() and task.exception() is not None:
        log.error("scenario replay crashed", exc_info=task.exception())

"""Checks, configs and run environments built for tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from prober.config.model import HttpCheck
from prober.config.templates import TemplateValues
from prober.engine.runner import RunEnvironment
from prober.probes.context import HttpClients
from prober.probes.sessions import SessionStore
from prober.result import AttemptFailure, HttpFacts, Phases, Reason, Result, StepResult
from prober.sim import RunningSim
from tests.support.processes import (
    REPO,
)

_F = TypeVar("_F")


def http_check(url: str, **settings: Any) -> HttpCheck:
    """An http check named `t` on `url` (10s interval, 2s timeout); `settings` override."""
    fields: dict[str, Any] = {
        "name": "t",
        "kind": "http",
        "component": "api",
        "url": url,
        "interval": 10.0,
        "timeout": 2.0,
    }
    fields.update(settings)
    return HttpCheck.model_validate(fields)


@contextlib.asynccontextmanager
async def run_environment(
    values: TemplateValues | None = None, sensitive: frozenset[str] = frozenset()
) -> AsyncIterator[RunEnvironment]:
    """What `run_check` needs: fresh HTTP clients (closed on exit) and sessions."""
    clients = HttpClients("prober-test")
    try:
        yield RunEnvironment(clients, dict(values or {}), sensitive, SessionStore())
    finally:
        await clients.close()


WriteConfig = Callable[..., Path]


def fast_shipped_config(
    directory: Path, interval: str = "1s", timeout: str = "0.8s", extra: str = ""
) -> Path:
    """The shipped prober.yml and checks/, with short intervals, written into `directory`.

    `extra` is appended to prober.yml (e.g. a looser `loop_lag_budget` where a test runs the
    simulated platform in the daemon's own event loop).
    """
    text = (REPO / "prober.yml").read_text()
    text = text.replace("checks/*.yml", str(REPO / "checks" / "*.yml"))
    text = text.replace("interval: 15s", f"interval: {interval}")
    text = text.replace("timeout: 5s", f"timeout: {timeout}")
    path = directory / "prober.yml"
    path.write_text(text + extra)
    return path


def shipped_env(sim: RunningSim) -> dict[str, str]:
    """The variables that point the shipped checks at `sim` (started with `grpc_listen` for
    the gRPC check), as `prober demo` sets them."""
    env = {"PLATFORM_URL": sim.url, "PLATFORM_WS_URL": sim.url.replace("http://", "ws://", 1)}
    if sim.grpc is not None:
        env["PLATFORM_GRPC"] = sim.grpc.address
    return env


def login_result(check: str, success: bool, duration: float) -> Result:
    """A one-step (`login`) run that passed (status 200) or failed (503), with phases."""
    step = StepResult(
        "login",
        success,
        duration,
        None if success else Reason.STATUS,
        facts=HttpFacts(
            status_code=200 if success else 503,
            phases=Phases(0.001, 0.002, 0.0, duration / 2, 0.0005),
        ),
    )
    return Result(
        check,
        success,
        duration,
        started_at=1_700_000_000.0,
        steps=(step,),
        reason=None if success else Reason.STATUS,
        failed_step="" if success else "login",
        failures=() if success else (AttemptFailure(Reason.STATUS, "login"),),
    )


def facts_of(step: StepResult, kind: type[_F]) -> _F:
    """The step's facts, which must be of this kind (HttpFacts, TcpFacts, DnsFacts)."""
    assert isinstance(step.facts, kind), step
    return step.facts

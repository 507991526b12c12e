"""A stand-in for what the web app reads, so its endpoints and server are tested without a
daemon: fixed metrics, a fixed status snapshot, a reload a test can hold or fail; and a
server for an app within given limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from prober.config.load import ConfigError, ConfigIssue
from prober.web.server import WebLimits, WebServer, start_web

METRICS = [b"# HELP stand_in_up A stand-in's metric.\n", b"# TYPE stand_in_up gauge\n"]
SAMPLE = b"stand_in_up 1\n"


@contextlib.asynccontextmanager
async def serving(app: web.Application, limits: WebLimits) -> AsyncIterator[WebServer]:
    """Serve `app` on a free loopback port within `limits`; cleaned up on the way out."""
    server = await start_web(app, "127.0.0.1", 0, limits=limits)
    try:
        yield server
    finally:
        await server.cleanup()


def snapshot() -> dict[str, Any]:
    """A status snapshot shaped like StatusSink.snapshot: one component, one failing check."""
    return {
        "labels": {"vantage": "stand-in"},
        "verdict": "component_down",
        "scope": "component",
        "summary": "component down: api",
        "evaluated_at": 1.7e9,
        "components": [
            {"name": "api", "state": "down", "failing": 1, "checks": 1, "failing_share": None}
        ],
        "checks": [
            {
                "name": "stand-in-check",
                "component": "api",
                "kind": "http",
                "state": "failing",
                "confirming": False,
                "last_run_ok": False,
                "degraded": False,
                "reason": "status",
                "failed_step": "request",
                "message": "status 503",
                "duration_seconds": 0.01,
                "last_run": 1.7e9,
                "last_success": None,
                "failing_since": 1.7e9,
                "uptime_24h": 0.5,
                "uptime_7d": 0.5,
                "history": [True, False],
                "recent_runs": [
                    {"at": 1.7e9, "ok": True, "reason": None, "seconds": 0.01},
                    {"at": 1.7e9 + 4, "ok": False, "reason": "status", "seconds": 0.01},
                ],
            }
        ],
    }


@dataclass(frozen=True)
class Reloaded:
    """What the stand-in's reload gives back: only the checks, which /-/reload counts."""

    checks: tuple[str, ...]


@dataclass
class StandIn:
    """Renders fixed metrics and reports a fixed status; is no Daemon and holds no config.

    `reload` waits for `release` when it is given, and fails with a located ConfigError
    while `broken` is set; `reloads` counts the calls.
    """

    ready: bool = True
    snapshot: dict[str, Any] = field(default_factory=snapshot)
    broken: bool = False
    release: asyncio.Event | None = None
    reloads: int = 0
    formats: list[bool] = field(default_factory=list)  # openmetrics asked, per scrape

    def render_chunks(self, *, openmetrics: bool) -> list[bytes]:
        self.formats.append(openmetrics)
        return [*METRICS, SAMPLE, b"# EOF\n"] if openmetrics else [*METRICS, SAMPLE]

    def status_snapshot(self) -> dict[str, Any]:
        return self.snapshot

    async def reload(self) -> Reloaded:
        self.reloads += 1
        if self.release is not None:
            await self.release.wait()
        if self.broken:
            raise ConfigError([ConfigIssue("stand-in.yml", "not a duration", 3, "c", "interval")])
        return Reloaded(("a", "b", "c"))

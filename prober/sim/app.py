"""The simulated social platform: its JSON API (sim/routes.py), per-component faults and the
`/-/` admin API (sim/admin.py), over the state one platform owns (sim/state.py).

Every platform endpoint belongs to one component (api, login, timeline, notifications); see
docs/SIMULATOR.md.
"""

from __future__ import annotations

from aiohttp import web

from prober.sim.admin import add_admin_routes
from prober.sim.routes import add_platform_routes
from prober.sim.scenarios import load_scenario
from prober.sim.state import SIM_STATE, SimOptions, SimState


def create_app(options: SimOptions | None = None) -> web.Application:
    """Build the simulated platform; a bad `options.scenario` raises ScenarioError here."""
    options = options or SimOptions()
    scenario = load_scenario(options.scenario) if options.scenario else None
    state = SimState(options)
    app = web.Application()
    app[SIM_STATE] = state
    add_platform_routes(app)
    add_admin_routes(app)

    async def start_replay(app: web.Application) -> None:
        if scenario is not None:
            await state.runner.start(scenario, options.speed)

    async def release_waiters(app: web.Application) -> None:
        # Hung and slow responses wait on this, so shutdown never waits for them.
        state.closing.set()
        state.feed.close()  # and open notification streams close (1001)

    async def stop_replay(app: web.Application) -> None:
        await state.runner.stop()

    app.on_startup.append(start_replay)
    app.on_shutdown.append(release_waiters)
    app.on_cleanup.append(stop_replay)
    return app

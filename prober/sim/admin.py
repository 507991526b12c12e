"""The simulator's own API under `/-/`: faults per component, scripted scenarios, the
population, the counts of what it served, and its liveness (never faulted, never counted)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prober.sim.faults import (
    Component,
    FaultError,
    describe_validation_error,
    parse_component,
    parse_fault_spec,
)
from prober.sim.scenarios import ScenarioError, load_scenario
from prober.sim.state import SIM_STATE


def _admin_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def get_faults(request: web.Request) -> web.Response:
    """The injected faults, per component."""
    components = [c.value for c in Component]
    return web.json_response(
        {"faults": request.app[SIM_STATE].faults.snapshot(), "components": components}
    )


async def put_fault(request: web.Request) -> web.Response:
    """Replace one component's fault with the JSON body (an empty object clears it)."""
    state = request.app[SIM_STATE]
    try:
        component = parse_component(request.match_info["component"])
    except FaultError as exc:
        return _admin_error(404, str(exc))
    try:
        data = await request.json()
    except ValueError:
        return _admin_error(400, "body is not valid JSON")
    try:
        spec = parse_fault_spec(data, component.value, component)
    except FaultError as exc:
        return _admin_error(400, str(exc))
    state.faults.set(component, spec)
    return web.json_response(
        {"component": component.value, "fault": spec.model_dump(exclude_defaults=True)}
    )


async def delete_fault(request: web.Request) -> web.Response:
    """Clear one component's fault."""
    try:
        component = parse_component(request.match_info["component"])
    except FaultError as exc:
        return _admin_error(404, str(exc))
    request.app[SIM_STATE].faults.clear(component)
    return web.json_response({"faults": request.app[SIM_STATE].faults.snapshot()})


async def delete_faults(request: web.Request) -> web.Response:
    """Clear every fault."""
    request.app[SIM_STATE].faults.clear()
    return web.json_response({"faults": {}})


async def get_accounts(request: web.Request) -> web.Response:
    """The population: how many accounts, the first names and the pattern of the rest."""
    return web.json_response(request.app[SIM_STATE].population.describe())


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_STATE].stats.snapshot())


async def delete_stats(request: web.Request) -> web.Response:
    request.app[SIM_STATE].stats.reset()
    return web.json_response(request.app[SIM_STATE].stats.snapshot())


async def healthy(request: web.Request) -> web.Response:
    """Liveness of the simulator itself: never faulted, never counted."""
    return web.json_response({"status": "ok"})


class _ScenarioRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    speed: float = Field(default=1.0, gt=0.0)


async def get_scenario(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_STATE].runner.status())


async def start_scenario(request: web.Request) -> web.Response:
    """Start replaying a shipped scenario (or a file the sim can read), replacing any other."""
    state = request.app[SIM_STATE]
    try:
        wanted = _ScenarioRequest.model_validate(await request.json())
    except ValueError as exc:  # ValidationError is a ValueError too
        detail = (
            "; ".join(describe_validation_error(exc))
            if isinstance(exc, ValidationError)
            else "body is not valid JSON"
        )
        return _admin_error(400, detail)
    try:
        scenario = await asyncio.to_thread(load_scenario, wanted.name)
    except ScenarioError as exc:
        return _admin_error(400, str(exc))
    await state.runner.start(scenario, wanted.speed)
    return web.json_response(state.runner.status())


async def stop_scenario(request: web.Request) -> web.Response:
    """Stop the replay and clear every fault, back to a healthy platform."""
    state = request.app[SIM_STATE]
    await state.runner.stop()
    state.faults.clear()
    return web.json_response(state.runner.status())


def add_admin_routes(app: web.Application) -> None:
    """The `/-/` routes: never faulted, never counted."""
    router = app.router
    router.add_get("/-/healthy", healthy)
    router.add_get("/-/accounts", get_accounts)
    router.add_get("/-/faults", get_faults)
    router.add_delete("/-/faults", delete_faults)
    router.add_put("/-/faults/{component}", put_fault)
    router.add_delete("/-/faults/{component}", delete_fault)
    router.add_get("/-/stats", get_stats)
    router.add_delete("/-/stats", delete_stats)
    router.add_get("/-/scenario", get_scenario)
    router.add_post("/-/scenario", start_scenario)
    router.add_delete("/-/scenario", stop_scenario)

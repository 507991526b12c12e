"""The simulated social platform that `make run`, the tests and the benchmarks probe.

See docs/SIMULATOR.md. `start_sim()` serves it in-process; `prober sim` serves it from the CLI.
"""

from prober.sim.app import DEMO_PASSWORD, DEMO_USER, SimOptions, create_app
from prober.sim.faults import Component, FaultSpec, Outcome
from prober.sim.scenarios import Scenario, ScenarioError, load_scenario
from prober.sim.server import RunningSim, add_sim_arguments, run_sim, start_sim

__all__ = [
    "DEMO_PASSWORD",
    "DEMO_USER",
    "Component",
    "FaultSpec",
    "Outcome",
    "RunningSim",
    "Scenario",
    "ScenarioError",
    "SimOptions",
    "add_sim_arguments",
    "create_app",
    "load_scenario",
    "run_sim",
    "start_sim",
]

"""The simulated social platform that `make run`, the tests and the benchmarks probe.

See docs/SIMULATOR.md. `start_sim()` serves it in-process; `prober sim` serves it from the CLI.
"""

from prober.sim.accounts import ACCOUNT_PATTERN, account_name, shard_share
from prober.sim.app import create_app
from prober.sim.faults import Component, FaultSpec, Outcome
from prober.sim.scenarios import Scenario, ScenarioError, load_scenario
from prober.sim.server import RunningSim, add_sim_arguments, run_sim, start_sim
from prober.sim.state import DEMO_API_TOKEN, DEMO_PASSWORD, DEMO_USER, SimOptions

__all__ = [
    "ACCOUNT_PATTERN",
    "DEMO_API_TOKEN",
    "DEMO_PASSWORD",
    "DEMO_USER",
    "Component",
    "FaultSpec",
    "Outcome",
    "RunningSim",
    "Scenario",
    "ScenarioError",
    "SimOptions",
    "account_name",
    "add_sim_arguments",
    "create_app",
    "load_scenario",
    "run_sim",
    "shard_share",
    "start_sim",
]

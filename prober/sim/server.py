"""Start and stop the simulated platform: in-process for tests and demos, or as `prober sim`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from dataclasses import dataclass

from aiohttp import web
from pydantic import ValidationError

from prober.sim.accounts import ACCOUNT_PATTERN, account_name
from prober.sim.app import create_app
from prober.sim.faults import FaultError, describe_validation_error, parse_fault_args
from prober.sim.grpc import RunningGrpc, start_grpc_health
from prober.sim.scenarios import ScenarioError, builtin_scenarios, load_scenario
from prober.sim.state import DEMO_PASSWORD, DEMO_USER, SIM_STATE, SimOptions

__all__ = ["RunningSim", "SimOptions", "add_sim_arguments", "run_sim", "start_sim"]

DEFAULT_LISTEN = "127.0.0.1:8180"
# Hung and slow responses are released on shutdown; this only bounds a handler that ignores it.
_SHUTDOWN_TIMEOUT_S = 2.0


class CannotListen(OSError):
    """A listening socket the sim could not open, and which (`where`: HOST:PORT)."""

    def __init__(self, where: str, error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error))
        self.where = where


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class RunningSim:
    """A simulated platform listening on a real socket (and its gRPC health service on
    another, when asked for)."""

    app: web.Application
    host: str
    port: int
    _runner: web.AppRunner
    grpc: RunningGrpc | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:8180` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening, release hung requests, stop the scenario replay."""
        if self.grpc is not None:
            await self.grpc.stop()
        await self._runner.cleanup()


async def start_sim(
    host: str = "127.0.0.1",
    port: int = 0,
    options: SimOptions | None = None,
    *,
    grpc_listen: tuple[str, int] | None = None,
    grpc_tls: ssl.SSLContext | None = None,
) -> RunningSim:
    """Serve the simulated platform on host:port (0 picks a free port) until `stop()`;
    with `grpc_listen`, its gRPC health service too (over TLS with `grpc_tls`)."""
    app = create_app(options)
    # handler_cancellation: a client that gives up on a hung request ends its handler too.
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise CannotListen(_address(host, port), exc) from exc
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    grpc = None
    if grpc_listen is not None:
        try:
            grpc = await start_grpc_health(app[SIM_STATE], *grpc_listen, tls=grpc_tls)
        except OSError as exc:
            await runner.cleanup()
            raise CannotListen(_address(*grpc_listen), exc) from exc
        except BaseException:
            await runner.cleanup()
            raise
    return RunningSim(app=app, host=host, port=bound_port, _runner=runner, grpc=grpc)


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `prober sim` options to `parser`."""
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
        help=f"address to serve on (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )  # fmt: skip
    parser.add_argument(
        "--grpc-listen", metavar="HOST:PORT",
        help="serve the gRPC health service there too (default off; port 0 picks a free one)",
    )  # fmt: skip
    parser.add_argument(
        "--fault", action="append", default=[], metavar="COMPONENT:KEY=VALUE[,KEY=VALUE]",
        help="inject a fault at start, e.g. notifications:status=503 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--scenario", metavar="NAME|FILE",
        help=f"replay an outage: {', '.join(builtin_scenarios())} or a YAML file",
    )  # fmt: skip
    parser.add_argument(
        "--speed", type=float, default=1.0, help="scenario speed-up factor (default 1)"
    )
    parser.add_argument("--seed", type=int, help="seed for error rates and latency jitter")
    parser.add_argument(
        "--token-ttl", type=float, default=3600.0, metavar="SECONDS",
        help="bearer token lifetime (default 3600)",
    )  # fmt: skip
    parser.add_argument(
        "--latency-ms", type=float, default=2.0, help="base latency of every answer (default 2)"
    )
    parser.add_argument(
        "--latency-jitter-ms", type=float, default=3.0,
        help="random extra latency, uniform 0..N ms (default 3)",
    )  # fmt: skip
    parser.add_argument(
        "--user", action="append", default=[], metavar="NAME:PASSWORD",
        help=f"add a user (repeatable); {DEMO_USER}/{DEMO_PASSWORD} always exists",
    )  # fmt: skip
    parser.add_argument(
        "--accounts", type=int, default=100, metavar="N",
        help=f"a population of N accounts, {ACCOUNT_PATTERN.format(i=1)} ... (default 100)",
    )  # fmt: skip
    parser.add_argument(
        "--accounts-password", default=DEMO_PASSWORD, metavar="PASSWORD",
        help=f"the population's password (default {DEMO_PASSWORD})",
    )  # fmt: skip


def parse_listen(
    text: str, option: str = "--listen", example: str = DEFAULT_LISTEN
) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [::1]:PORT) or raise ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bad {option} {text!r}: expected HOST:PORT, e.g. {example}")
    return host.strip("[]"), int(port)


def _parse_users(texts: list[str]) -> dict[str, str]:
    """The demo user plus every `--user NAME:PASSWORD`."""
    users = {DEMO_USER: DEMO_PASSWORD}
    for text in texts:
        name, sep, password = text.partition(":")
        if not sep or not name or not password:
            raise ValueError(f"bad --user {text!r}: expected NAME:PASSWORD")
        users[name] = password
    return users


def options_from_args(args: argparse.Namespace) -> SimOptions:
    """SimOptions from parsed `prober sim` arguments; raise ValueError with a one-line message."""
    try:
        return SimOptions(
            users=_parse_users(args.user),
            accounts=args.accounts,
            accounts_password=args.accounts_password,
            token_ttl_s=args.token_ttl,
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_jitter_ms,
            seed=args.seed,
            faults=parse_fault_args(args.fault),
            scenario=args.scenario,
            speed=args.speed,
        )
    except ValidationError as exc:
        raise ValueError("; ".join(describe_validation_error(exc))) from None


def run_sim(args: argparse.Namespace) -> int:
    """`prober sim`: serve until SIGINT/SIGTERM and return 0; bad arguments return 2."""
    try:
        options = options_from_args(args)
        host, port = parse_listen(args.listen)
        grpc_listen = (
            parse_listen(args.grpc_listen, "--grpc-listen", "127.0.0.1:50051")
            if args.grpc_listen
            else None
        )
        if options.scenario:
            load_scenario(options.scenario)  # fail before serving, not after
    except (FaultError, ScenarioError, ValueError) as exc:
        print(f"prober sim: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(host, port, options, grpc_listen))


async def _serve(
    host: str, port: int, options: SimOptions, grpc_listen: tuple[str, int] | None
) -> int:
    """Run the sim until a signal; a scenario or socket problem is one line on stderr."""
    try:
        sim = await start_sim(host, port, options, grpc_listen=grpc_listen)
    except ScenarioError as exc:
        print(f"prober sim: {exc}", file=sys.stderr)
        return 2
    except CannotListen as exc:
        print(f"prober sim: cannot listen on {exc.where}: {exc.strerror}", file=sys.stderr)
        return 2
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    scenario = (
        f", replaying {options.scenario} at speed {options.speed:g}" if options.scenario else ""
    )
    # The population's password is not printed: unlike the demo one it may have been chosen.
    population = (
        f", accounts {account_name(1)}..{account_name(options.accounts)}"
        if options.accounts
        else ", no accounts"
    )
    grpc = f", gRPC health {sim.grpc.address}" if sim.grpc is not None else ""
    print(
        f"prober sim: serving {sim.url} (demo user {DEMO_USER} / {DEMO_PASSWORD}{population})"
        f"{scenario}{grpc}",
        flush=True,
    )
    try:
        await stopping.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await sim.stop()
    return 0

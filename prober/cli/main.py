"""The `prober` command: run, validate, probe, sim, reference, demo."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import logging
import os
import ssl
import sys
import urllib.request
from collections.abc import Mapping, Sequence

from prober import __version__
from prober.cli.serve import serve
from prober.config.load import ConfigError, load_config, shared_fate_warnings
from prober.config.model import parse_duration
from prober.engine.loop import UVLOOP_MODES, use_event_loop
from prober.engine.shard import Shard, parse_shard
from prober.sinks.log import LOG_LEVELS, setup_logging
from prober.web.listen import parse_listen_address

log = logging.getLogger("prober")

DEFAULT_LISTEN = "127.0.0.1:9797"
DEFAULT_SIM_LISTEN = "127.0.0.1:8180"
DEFAULT_REFERENCE_LISTEN = "127.0.0.1:8181"
DEFAULT_SIM_GRPC_LISTEN = "127.0.0.1:8182"


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default="prober.yml",
        help="prober config file (default: prober.yml)",
    )


def _add_logging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=LOG_LEVELS,
        help="debug, info, warn (or warning), error (default: info)",
    )
    parser.add_argument(
        "--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"]
    )


def _parse_interval(text: str) -> float:
    """A duration (`30s`, `1m`) or `0` for off; argparse reports the error with the flag."""
    try:
        return float(parse_duration(int(text) if text.isdigit() else text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration such as 30s or 1m (0 turns it off)"
        ) from None


def _add_listen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        action="append",
        default=None,
        metavar="ADDRESS",
        help="where to serve /metrics and /status: HOST:PORT, :PORT (every interface, IPv4 "
        "and IPv6) or [::1]:PORT; repeat the flag for several (default: "
        f"PROBER_WEB_LISTEN_ADDRESS, comma-separated, else {DEFAULT_LISTEN})",
    )


def _listen_addresses(flags: list[str] | None, env: Mapping[str, str] = os.environ) -> list[str]:
    """The flags, else PROBER_WEB_LISTEN_ADDRESS (so a container's HEALTHCHECK can read the
    same value), else the default."""
    if flags:
        return flags
    from_env = [a.strip() for a in env.get("PROBER_WEB_LISTEN_ADDRESS", "").split(",")]
    return [a for a in from_env if a] or [DEFAULT_LISTEN]


def _add_daemon(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    _add_logging(parser)
    _add_listen(parser)
    parser.add_argument(
        "--uvloop",
        choices=UVLOOP_MODES,
        default=None,
        help="event loop: auto uses uvloop when installed (the fast extra); "
        "default from PROBER_UVLOOP, else auto",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="allow POST /-/reload (off by default)",
    )
    parser.add_argument(
        "--shard",
        default=os.environ.get("PROBER_SHARD"),
        help="INDEX/COUNT: run only this shard's checks (e.g. 0/3); `auto` takes INDEX from "
        "the host name's -N suffix (StatefulSet pod) and COUNT from PROBER_SHARD_COUNT "
        "(env: PROBER_SHARD)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        help="exporter-toolkit web config: TLS and basic auth for the web endpoints",
    )
    parser.add_argument(
        "--config.auto-reload-interval",
        dest="auto_reload_interval",
        default="0",
        type=_parse_interval,
        metavar="DURATION",
        help="check the config files this often (e.g. 30s) and reload when they change "
        "(default: 0, off)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prober", description="Synthetic API health probe with Prometheus metrics."
    )
    parser.add_argument("--version", action="version", version=f"prober {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_daemon(commands.add_parser("run", help="run the daemon"))
    _add_config(commands.add_parser("validate", help="check the config and exit"))
    probe = commands.add_parser("probe", help="run one check once and show a trace")
    _add_config(probe)
    probe.add_argument("check", help="name of the check to run")
    probe.add_argument(
        "--metrics", action="store_true", help="also print the series this run would export"
    )
    health = commands.add_parser(
        "healthcheck", help="exit 0 if the daemon on the listen address answers /-/healthy"
    )
    _add_listen(health)
    from prober.sim.server import add_sim_arguments

    add_sim_arguments(commands.add_parser("sim", help="run the simulated platform"))
    from prober.sim.reference import add_reference_arguments

    add_reference_arguments(
        commands.add_parser("reference", help="run the canary's reference endpoint")
    )
    demo = commands.add_parser(
        "demo", help="the simulated platform, the canary's reference endpoint and the daemon"
    )
    _add_daemon(demo)
    demo.add_argument(
        "--sim.listen-address",
        dest="sim_listen",
        default=DEFAULT_SIM_LISTEN,
        help=f"where the simulated platform listens (default: {DEFAULT_SIM_LISTEN}; port 0 "
        "picks a free one)",
    )
    demo.add_argument(
        "--sim.grpc-listen-address",
        dest="sim_grpc_listen",
        default=DEFAULT_SIM_GRPC_LISTEN,
        help="where the simulated platform's gRPC health service listens (default: "
        f"{DEFAULT_SIM_GRPC_LISTEN}; port 0 picks a free one)",
    )
    demo.add_argument(
        "--reference.listen-address",
        dest="reference_listen",
        default=DEFAULT_REFERENCE_LISTEN,
        help="where the canary's reference endpoint listens (default: "
        f"{DEFAULT_REFERENCE_LISTEN}; port 0 picks a free one)",
    )
    demo.add_argument("--scenario", default=None, help="outage replay to start in the sim")
    demo.add_argument("--speed", default="1", help="replay speed factor")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "validate":
            return _validate(args.config_file)
        if args.command == "probe":
            from prober.cli.trace import probe_once

            return asyncio.run(probe_once(args.config_file, args.check, args.metrics))
        if args.command == "sim":
            from prober.sim.server import run_sim

            return run_sim(args)
        if args.command == "reference":
            from prober.sim.reference import run_reference

            return run_reference(args)
        args.listen = _listen_addresses(args.listen)
        if args.command == "healthcheck":
            return _healthcheck(args.listen[0])
        setup_logging(args.log_level, args.log_format)
        try:
            # Bad flags are usage errors; a ValueError from the running daemon is a bug and
            # keeps its traceback.
            shard = parse_shard(args.shard)
            for text in args.listen:
                parse_listen_address(text)
        except ValueError as exc:
            log.error(str(exc))
            return 2
        if args.command == "demo":
            return _demo(args, shard)
        return _run(args, shard)
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, shard: Shard | None) -> int:
    use_event_loop(args.uvloop)
    return asyncio.run(
        serve(
            args.config_file,
            args.listen,
            args.enable_lifecycle,
            shard,
            web_config_file=args.web_config_file,
            auto_reload_interval=args.auto_reload_interval,
        )
    )


def _healthcheck(listen: str) -> int:
    """GET /-/healthy on `listen` (every interface: loopback), over http, else over https.

    For a container HEALTHCHECK: it follows PROBER_WEB_LISTEN_ADDRESS, and works with a web
    config's TLS too (no certificate check: it is a liveness check on this machine, and
    /-/healthy needs no credentials and says nothing but "OK").
    """
    try:
        address = parse_listen_address(listen)
    except ValueError as exc:
        print(f"prober healthcheck: {exc}", file=sys.stderr)
        return 2
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    failures = []
    for scheme, context in (("http", None), ("https", unverified)):
        url = f"{scheme}://{address.local_host()}:{address.port}/-/healthy"
        try:
            with urllib.request.urlopen(url, timeout=4, context=context) as response:
                if response.status == 200:
                    return 0
                failures.append(f"{url}: status {response.status}")
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
    print(f"prober healthcheck: {'; '.join(failures)}", file=sys.stderr)
    return 1


def _validate(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.issues)} error(s):\n{exc}", file=sys.stderr)
        return 1
    for warning in shared_fate_warnings(config):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    print(f"{path}: OK, {len(config.checks)} checks from {len(config.files)} files")
    return 0


def _demo(args: argparse.Namespace, shard: Shard | None) -> int:
    """The simulated platform and the canary's reference endpoint, each in a child process
    of its own (stopping one leaves the other up), and the daemon probing them."""
    from prober.cli.demo import run_demo

    return run_demo(args, lambda: _run(args, shard))

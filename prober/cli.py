"""The `prober` command: run, validate, probe, sim, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence

from prober import __version__
from prober.config import ConfigError, load_config
from prober.config_model import parse_duration
from prober.daemon import UVLOOP_MODES, Shard, use_event_loop
from prober.listen import parse_listen_address
from prober.logs import LOG_LEVELS, setup_logging
from prober.serve import serve

log = logging.getLogger("prober")

DEFAULT_LISTEN = "127.0.0.1:9797"
DEFAULT_SIM_LISTEN = "127.0.0.1:8180"


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


def _add_daemon(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    _add_logging(parser)
    parser.add_argument(
        "--uvloop",
        choices=UVLOOP_MODES,
        default=None,
        help="event loop: auto uses uvloop when installed (the fast extra); "
        "default from PROBER_UVLOOP, else auto",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        action="append",
        default=None,
        metavar="ADDRESS",
        help="where to serve /metrics and /status: HOST:PORT, :PORT (every interface, IPv4 "
        f"and IPv6) or [::1]:PORT; repeat the flag for several (default: {DEFAULT_LISTEN})",
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


_POD_ORDINAL = re.compile(r"-(\d+)$")


def _parse_shard(text: str | None, env: Mapping[str, str] = os.environ) -> Shard | None:
    """`INDEX/COUNT`, or `auto`: INDEX from the host name `name-N`, COUNT from the env."""
    if not text:
        return None
    if text == "auto":
        host = env.get("HOSTNAME") or socket.gethostname()
        ordinal = _POD_ORDINAL.search(host)
        count = env.get("PROBER_SHARD_COUNT", "")
        if ordinal is None:
            raise ValueError(f"--shard auto: host name {host!r} does not end in -N (a pod ordinal)")
        if not count.isdigit():
            raise ValueError("--shard auto needs PROBER_SHARD_COUNT set to the number of shards")
        text = f"{ordinal.group(1)}/{count}"
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise ValueError(f"--shard {text!r} must be INDEX/COUNT with 0 <= INDEX < COUNT")
    return Shard(int(index), int(count))


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
    from prober.sim.server import add_sim_arguments

    add_sim_arguments(commands.add_parser("sim", help="run the simulated platform"))
    demo = commands.add_parser("demo", help="the simulated platform plus the daemon")
    _add_daemon(demo)
    demo.add_argument(
        "--sim.listen-address",
        dest="sim_listen",
        default=DEFAULT_SIM_LISTEN,
        help=f"where the simulated platform listens (default: {DEFAULT_SIM_LISTEN}; port 0 "
        "picks a free one)",
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
            from prober.trace import probe_once

            return asyncio.run(probe_once(args.config_file, args.check, args.metrics))
        if args.command == "sim":
            from prober.sim.server import run_sim

            return run_sim(args)
        setup_logging(args.log_level, args.log_format)
        args.listen = args.listen or [DEFAULT_LISTEN]
        try:
            # Bad flags are usage errors; a ValueError from the running daemon is a bug and
            # keeps its traceback.
            shard = _parse_shard(args.shard)
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


def _validate(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.issues)} error(s):\n{exc}", file=sys.stderr)
        return 1
    print(f"{path}: OK, {len(config.checks)} checks from {len(config.files)} files")
    return 0


def _demo(args: argparse.Namespace, shard: Shard | None) -> int:
    """The simulated platform in a child process and the daemon probing it."""
    from prober.demo import run_demo

    return run_demo(args, lambda: _run(args, shard))

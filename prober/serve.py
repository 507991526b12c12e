"""Run the daemon and its web server until SIGTERM/SIGINT; SIGHUP reloads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from prober.config import ConfigError
from prober.daemon import Daemon, Shard
from prober.web import bound_port, build_app, start_web

log = logging.getLogger("prober")


def parse_listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[::1]:PORT` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {text!r} must be HOST:PORT, e.g. 127.0.0.1:9797")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


async def serve(
    config_path: str, listen: str, enable_lifecycle: bool = False, shard: Shard | None = None
) -> int:
    """Start, serve until a stop signal, then shut down in stages. Returns the exit code."""
    host, port = parse_listen_address(listen)
    daemon = Daemon(config_path, shard=shard)
    try:
        await daemon.start()
    except ConfigError as exc:
        print(f"prober: invalid configuration:\n{exc}", file=sys.stderr)
        return 1
    try:
        runner = await start_web(build_app(daemon, enable_lifecycle), host, port)
    except OSError as exc:
        print(f"prober: cannot listen on {listen}: {exc.strerror}", file=sys.stderr)
        await daemon.stop()
        return 1
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{bound_port(runner)}"
    print(
        f"prober: {len(daemon.status.states())} checks; metrics {base}/metrics, "
        f"status {base}/status, JSON {base}/api/status",
        flush=True,
    )
    stop = asyncio.Event()
    reloads: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload_in_background, daemon, reloads)
    await stop.wait()
    log.info("stopping: closing the web server, letting in-flight probes finish")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
    await runner.cleanup()
    await daemon.stop()
    for task in reloads:
        task.cancel()
    return 0


def _reload_in_background(daemon: Daemon, tasks: set[asyncio.Task[None]]) -> None:
    async def reload() -> None:
        with contextlib.suppress(ConfigError):  # already logged; the running config stays
            await daemon.reload()

    task = asyncio.create_task(reload())
    tasks.add(task)
    task.add_done_callback(tasks.discard)

"""Run the daemon and its web server until SIGTERM/SIGINT; SIGHUP reloads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

from prober.config import Config, ConfigError, ConfigIssue, load_off_loop
from prober.daemon import Daemon
from prober.logs import Throttled
from prober.probes.context import out_of_descriptors
from prober.shard import Shard
from prober.watch import watch, watched_files
from prober.web import build_app, start_web
from prober.webconfig import WebSecurity, load_web_config, security_middleware

log = logging.getLogger("prober")


def parse_listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[::1]:PORT` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {text!r} must be HOST:PORT, e.g. 127.0.0.1:9797")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class _Reloader:
    """Reloads the daemon's config and the web config together, for every reload trigger."""

    def __init__(self, daemon: Daemon, security: WebSecurity | None) -> None:
        self.daemon = daemon
        self.security = security
        self.tasks: set[asyncio.Task[None]] = set()

    async def reload(self) -> Config:
        """Reload both; raise one ConfigError listing every issue if either is invalid."""
        issues: list[ConfigIssue] = []
        config = self.daemon.config
        try:
            config = await self.daemon.reload()
        except ConfigError as exc:
            issues.extend(exc.issues)
        if self.security is not None:
            try:
                await self.security.reload()
            except ConfigError as exc:
                issues.extend(exc.issues)
        if issues or config is None:
            raise ConfigError(issues)
        return config

    async def reload_quietly(self) -> None:
        """For SIGHUP and the file watch: errors are already logged; the running config stays."""
        with contextlib.suppress(ConfigError):
            await self.reload()

    def in_background(self) -> None:
        task = asyncio.create_task(self.reload_quietly())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def watched(self, config_path: Path) -> list[Path]:
        extra = [Path(self.security.config.file)] if self.security else []
        return watched_files(config_path, self.daemon.config, extra)


def raise_open_file_limit() -> None:
    """Raise the soft limit on open files to the hard one: every probe and web connection
    holds a descriptor, and distributions still start most processes with a soft 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. a seccomp filter (the unit sets LimitNOFILE)
        log.info("open file limit not raised", extra={"soft": soft, "hard": hard, "error": exc})
        return
    log.info("open file limit raised", extra={"from": soft, "to": hard})


def _quiet_fd_shortage(loop: asyncio.AbstractEventLoop) -> None:
    """Out of descriptors, asyncio's accept loop logs a traceback per failed accept (hundreds
    a second): say it in one line a minute instead; any other error keeps the default."""
    shortage = Throttled(log, "out of file descriptors: web connections wait (see RUNBOOK.md)")

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if out_of_descriptors(context.get("exception")):
            shortage.note()
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


async def serve(
    config_path: str,
    listen: str,
    enable_lifecycle: bool = False,
    shard: Shard | None = None,
    *,
    web_config_file: str | None = None,
    auto_reload_interval: float = 0.0,
) -> int:
    """Start, serve until a stop signal, then shut down in stages. Returns the exit code."""
    host, port = parse_listen_address(listen)
    raise_open_file_limit()
    _quiet_fd_shortage(asyncio.get_running_loop())
    security = None
    if web_config_file:
        try:
            load = partial(load_web_config, web_config_file)
            security = WebSecurity(await load_off_loop(load, web_config_file))
        except ConfigError as exc:
            print(f"prober: invalid web configuration:\n{exc}", file=sys.stderr)
            return 1
    daemon = Daemon(config_path, shard=shard)
    try:
        await daemon.start()
    except ConfigError as exc:
        print(f"prober: invalid configuration:\n{exc}", file=sys.stderr)
        return 1
    reloader = _Reloader(daemon, security)
    middlewares = [security_middleware(security)] if security else []
    app = build_app(
        daemon,
        enable_lifecycle,
        middlewares,
        reloader.reload,
        response_headers=(lambda: security.config.headers) if security else None,
    )
    try:
        runner = await start_web(app, host, port, security.ssl_context if security else None)
    except OSError as exc:
        print(f"prober: cannot listen on {listen}: {exc.strerror}", file=sys.stderr)
        await daemon.stop()
        return 1
    scheme = "https" if security and security.ssl_context else "http"
    base = f"{scheme}://{f'[{host}]' if ':' in host else host}:{runner.port}"
    print(
        f"prober: {len(daemon.status.states())} checks; metrics {base}/metrics, "
        f"status {base}/status, JSON {base}/api/status",
        flush=True,
    )
    async with asyncio.TaskGroup() as background:
        watcher = None
        if auto_reload_interval > 0:
            watcher = background.create_task(
                watch(
                    lambda: reloader.watched(Path(config_path)),
                    auto_reload_interval,
                    reloader.reload_quietly,
                    config_path,
                )
            )
        await _wait_for_stop(reloader)
        if watcher is not None:
            watcher.cancel()
    log.info("stopping: closing the web server, letting in-flight probes finish")
    for task in reloader.tasks:
        task.cancel()  # a reload stuck on a file must not hold the stop, nor apply after it
    await runner.cleanup()
    await daemon.stop()
    return 0


async def _wait_for_stop(reloader: _Reloader) -> None:
    """Until SIGTERM or SIGINT; SIGHUP reloads meanwhile."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloader.in_background)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

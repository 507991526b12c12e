"""Run the daemon and its web server until SIGTERM/SIGINT; SIGHUP reloads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from prober.config.load import Config, ConfigError, ConfigIssue, load_off_loop
from prober.engine.daemon import Daemon
from prober.engine.shard import Shard
from prober.engine.watch import watch, watched_files
from prober.probes.context import out_of_descriptors
from prober.sinks.log import Throttled, log_config_error
from prober.web.app import build_app
from prober.web.auth import WebSecurity, load_web_config, security_middleware
from prober.web.listen import ListenError, bind_all, describe, parse_listen_address, url_host
from prober.web.server import WebServer, serve_on

log = logging.getLogger("prober")


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
    listen: Sequence[str],
    enable_lifecycle: bool = False,
    shard: Shard | None = None,
    *,
    web_config_file: str | None = None,
    auto_reload_interval: float = 0.0,
) -> int:
    """Bind, start, serve until a stop signal, then shut down in stages. Returns the exit code.

    The addresses are bound first, so a busy port ends the start before any probe runs.
    """
    raise_open_file_limit()
    _quiet_fd_shortage(asyncio.get_running_loop())
    try:
        sockets = bind_all(parse_listen_address(text) for text in listen)
    except ListenError as exc:
        log.error(str(exc))
        return 1
    started = await _start(config_path, shard, web_config_file)
    if started is None:
        for sock in sockets:
            sock.close()
        return 1
    daemon, security = started
    reloader = _Reloader(daemon, security)
    middlewares = [security_middleware(security)] if security else []
    app = build_app(
        daemon.metrics,
        daemon,
        reloader.reload if enable_lifecycle else None,
        middlewares=middlewares,
        response_headers=(lambda: security.config.headers) if security else None,
    )
    try:
        runner = await serve_on(app, sockets, security.ssl_context if security else None)
    except OSError as exc:
        log.error("cannot serve", extra={"error": exc.strerror or str(exc)})
        await daemon.stop()
        return 1
    _announce(runner, len(daemon.status.states()), bool(security and security.ssl_context))
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


async def _start(
    config_path: str, shard: Shard | None, web_config_file: str | None
) -> tuple[Daemon, WebSecurity | None] | None:
    """Load the web config, then start the daemon; None (errors logged) if either is invalid."""
    security = None
    if web_config_file:
        try:
            load = partial(load_web_config, web_config_file)
            security = WebSecurity(await load_off_loop(load, web_config_file))
        except ConfigError as exc:
            log_config_error("invalid web configuration", exc)
            return None
    daemon = Daemon(config_path, shard=shard)
    try:
        await daemon.start()
    except ConfigError as exc:
        log_config_error("invalid configuration", exc)
        return None
    return daemon, security


def _announce(server: WebServer, checks: int, tls: bool) -> None:
    """One line per listening socket, then where to look: the start banner, as a log line."""
    for sock in server.sockets:
        log.info("listening", extra={"address": describe(sock), "tls": tls})
    base = f"{'https' if tls else 'http'}://{url_host(server.sockets[0])}:{server.port}"
    log.info(
        "serving",
        extra={
            "checks": checks,
            "metrics": f"{base}/metrics",
            "status": f"{base}/status",
            "api": f"{base}/api/status",
        },
    )


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

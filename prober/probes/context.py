"""What a probe gets besides its check: shared HTTP clients, a deadline, values and sessions."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp

from prober.config_model import IpProtocol, TlsOptions
from prober.probes.sessions import SessionStore
from prober.result import StepResult

_FAMILIES = {"ip4": socket.AF_INET, "ip6": socket.AF_INET6, "either": socket.AF_UNSPEC}


@dataclass
class PhaseTimer:
    """Timestamps (perf_counter) of one request's round trips, filled by aiohttp trace hooks."""

    start: float
    dns_start: float = 0.0
    dns_time: float = 0.0
    conn_start: float = 0.0
    conn_time: float = 0.0
    ready: float = 0.0
    redirects: int = 0

    def __post_init__(self) -> None:
        self.ready = self.start


async def _on_dns_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    ctx.trace_request_ctx.dns_start = time.perf_counter()


async def _on_dns_end(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    timer: PhaseTimer = ctx.trace_request_ctx
    timer.dns_time += time.perf_counter() - timer.dns_start


async def _on_conn_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    ctx.trace_request_ctx.conn_start = time.perf_counter()


async def _on_conn_end(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    timer: PhaseTimer = ctx.trace_request_ctx
    now = time.perf_counter()
    timer.conn_time += now - timer.conn_start
    timer.ready = now


async def _on_reuse(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    ctx.trace_request_ctx.ready = time.perf_counter()


async def _on_redirect(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    ctx.trace_request_ctx.redirects += 1


def _trace_config() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_dns_resolvehost_start.append(_on_dns_start)
    trace.on_dns_resolvehost_end.append(_on_dns_end)
    trace.on_connection_create_start.append(_on_conn_start)
    trace.on_connection_create_end.append(_on_conn_end)
    trace.on_connection_reuseconn.append(_on_reuse)
    trace.on_request_redirect.append(_on_redirect)
    return trace


class HttpClients:
    """The daemon's aiohttp sessions: one per (keep-alive, address family), made on first use.

    Fresh-connection sessions use `force_close` so each probe pays DNS, connect and TLS like
    a new user does (blackbox_exporter's default); keep-alive sessions pool connections.
    """

    def __init__(self, user_agent: str) -> None:
        self._user_agent = user_agent
        self._sessions: dict[tuple[bool, socket.AddressFamily], aiohttp.ClientSession] = {}
        self._ssl: dict[TlsOptions, ssl.SSLContext | bool] = {}

    def session(self, keep_alive: bool, ip_protocol: IpProtocol) -> aiohttp.ClientSession:
        key = (keep_alive, _FAMILIES[ip_protocol])
        session = self._sessions.get(key)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                force_close=not keep_alive,
                limit=0,
                use_dns_cache=False,
                family=key[1],
                enable_cleanup_closed=False,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                trace_configs=[_trace_config()],
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": self._user_agent},
                auto_decompress=True,
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._sessions[key] = session
        return session

    def ssl_for(self, options: TlsOptions) -> ssl.SSLContext | bool:
        """An SSL context for these options, built once (files are read here, not per probe)."""
        cached = self._ssl.get(options)
        if cached is not None:
            return cached
        context: ssl.SSLContext | bool = True
        if options != TlsOptions():
            context = ssl.create_default_context(cafile=options.ca_file)
            if options.cert_file:
                context.load_cert_chain(options.cert_file, options.key_file)
            if options.insecure_skip_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        self._ssl[options] = context
        return context

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


@dataclass
class ProbeContext:
    """One run's context; `progress` keeps finished steps so a caller's timeout can report them."""

    clients: HttpClients
    deadline: float
    values: Mapping[str, str]
    sensitive: frozenset[str]
    sessions: SessionStore
    progress: list[StepResult] = field(default_factory=list)
    current_step: str = ""

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

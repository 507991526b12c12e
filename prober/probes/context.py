"""What a probe gets besides its check: shared HTTP clients, a deadline, values and sessions."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import aiohttp
import aiohttp.payload
from aiohttp.abc import AbstractStreamWriter, ResolveResult
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from prober.config.model import IpProtocol, TlsOptions
from prober.config.secrets import Redactor
from prober.config.templates import TemplateValues
from prober.probes.net.tls import (
    PeerFacts,
    TimedSSLObject,
    TlsBlock,
    TlsSetupError,
    build_context,
)
from prober.probes.recorder import StepRecorder
from prober.probes.sessions import SessionStore

FAMILIES = {"ip4": socket.AF_INET, "ip6": socket.AF_INET6, "either": socket.AF_UNSPEC}
_NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
# How many wrapped errors `out_of_descriptors` follows (aiohttp wraps once or twice).
_WRAP_DEPTH = 4


# ALPN protocol names a context offers, e.g. ("h2",) for gRPC; () offers none.


def out_of_descriptors(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error it wraps, says no file descriptor is left (EMFILE, ENFILE).

    Such a run says nothing about the target: it is reported as Reason.RESOURCE. aiohttp keeps
    the OSError of a failed connect in `os_error`; other code raises it `from` or inside an
    `except` (even `from None` keeps it as the context), so all three links are followed.
    """
    for _ in range(_WRAP_DEPTH):
        if exc is None:
            return False
        if isinstance(exc, OSError) and exc.errno in _NO_DESCRIPTORS:
            return True
        exc = getattr(exc, "os_error", None) or exc.__cause__ or exc.__context__
    return False


def family_mismatch(host: str, ip_protocol: IpProtocol, fallback: bool = False) -> str:
    """Why an IP-literal host cannot be reached with this ip_protocol ("" when it can)."""
    if ip_protocol == "either" or fallback:
        return ""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return ""  # a name: resolution picks the family
    wanted = 4 if ip_protocol == "ip4" else 6
    if address.version == wanted:
        return ""
    return f"{host} is an IPv{address.version} address but ip_protocol is {ip_protocol}"


@dataclass
class PhaseTimer:
    """Timestamps (perf_counter) of one request's round trips, filled by aiohttp trace hooks
    and by `HopRecorder` once per hop, so every redirect hop's phases are summed.

    `ready` is when the current hop had its connection, `processing` the sum over hops of
    connection-ready to response headers, `headers_at` when the last hop's headers came.
    """

    start: float
    dns_start: float = 0.0
    dns_time: float = 0.0
    conn_start: float = 0.0
    conn_time: float = 0.0
    ready: float = 0.0
    processing: float = 0.0
    headers_at: float = 0.0
    redirects: int = 0
    handshakes: list[TimedSSLObject] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ready = self.start

    @property
    def tls_time(self) -> float:
        """Seconds in the TLS handshakes of this request's new connections (redirects too).

        aiohttp's trace has no TLS signal: the handshakes time themselves (TimedSSLObject)
        and the step subtracts them from the connection-create span.
        """
        return sum(h.handshake_seconds for h in self.handshakes)


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


class HopRecorder:
    """A per-request client middleware, called once per hop (redirects too): times the hop
    from its connection to its response headers, and keeps the request's own cookie jar.

    The jar is keyed by the URL's host name (not the resolved address) and accepts IP hosts,
    so a cookie set by a redirect is sent on the next hop, as a browser and blackbox_exporter
    do; it lives as long as the request (its redirect chain), never across runs.
    """

    def __init__(self, timer: PhaseTimer) -> None:
        self._timer = timer
        self._jar = aiohttp.CookieJar(unsafe=True)

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        timer = self._timer
        timer.ready = time.perf_counter()  # the connection trace moves it on a new connection
        jar_cookies = self._jar.filter_cookies(request.url)
        if jar_cookies:
            sent = "; ".join(f"{name}={morsel.coded_value}" for name, morsel in jar_cookies.items())
            own = request.headers.get("Cookie")
            request.headers["Cookie"] = f"{own}; {sent}" if own else sent
        response = await handler(request)
        timer.headers_at = time.perf_counter()
        timer.processing += max(timer.headers_at - timer.ready, 0.0)
        self._jar.update_cookies_from_headers(
            response.headers.getall("Set-Cookie", []), response.url
        )
        return response


# Where the peer addresses of the current request's connections are noted.
_PEERS: ContextVar[list[str] | None] = ContextVar("peers", default=None)


@contextmanager
def collect_peers(into: list[str]) -> Iterator[None]:
    """Append the peer address of every connection this task gets inside the block."""
    token = _PEERS.set(into)
    try:
        yield
    finally:
        _PEERS.reset(token)


class _PeerNotingConnector(aiohttp.TCPConnector):
    """A TCPConnector that notes each connection's peer address (`collect_peers`), new or
    reused: the address the request really went to, for probe_ip_protocol and its hash."""

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        peers = _PEERS.get()
        transport = connection.transport
        if peers is not None and transport is not None:
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and peer:
                peers.append(str(peer[0]))
        return connection


class _PreferringResolver(aiohttp.ThreadedResolver):
    """`ip_protocol_fallback`: one address, of the preferred family if the name has one,
    else the other family's last, as blackbox_exporter's chooseProtocol picks it."""

    def __init__(self, preferred: socket.AddressFamily) -> None:
        super().__init__()
        self._preferred = preferred

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        found = await super().resolve(host, port, socket.AF_UNSPEC)
        chosen = [r for r in found if r["family"] == self._preferred][:1] or found[-1:]
        return chosen


def _no_silent_retry(session: aiohttp.ClientSession) -> None:
    """Stop aiohttp from quietly resending a GET once after a reset connection.

    A prober must see every reset: a silent second try turns a platform that resets half of
    its connections into one that looks healthy. aiohttp has no public switch for this
    (3.10+), so set the session's private flag where it exists; retries are the check's own
    `retries:` setting, counted in prober_check_attempts_total.
    """
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False


class HttpClients:
    """The daemon's aiohttp sessions: one per (keep-alive, address family), made on first use.

    Fresh-connection sessions use `force_close` so each probe pays DNS, connect and TLS like
    a new user does (blackbox_exporter's default); keep-alive sessions pool connections.
    Also keeps one SSL context per distinct `TlsOptions` and ALPN list (used by tcp,
    websocket and, offering h2, grpc checks too), all dropped together on a reload.
    """

    def __init__(self, user_agent: str) -> None:
        self._user_agent = user_agent
        self._sessions: dict[tuple[bool, socket.AddressFamily, bool], aiohttp.ClientSession] = {}
        self._ssl: dict[TlsBlock, asyncio.Task[ssl.SSLContext]] = {}
        # Last TLS facts per (host, port, options): a reused keep-alive connection shows no
        # handshake, but its certificate is still the one seen when it was made.
        self._peers: dict[tuple[str, int, TlsOptions], PeerFacts] = {}

    @property
    def user_agent(self) -> str:
        """The User-Agent every request sends unless its headers name one."""
        return self._user_agent

    def session(
        self, keep_alive: bool, ip_protocol: IpProtocol, fallback: bool = False
    ) -> aiohttp.ClientSession:
        """The session for these settings; with `fallback`, names resolve in both families
        and the preferred one's first address is used, else the other's last (blackbox)."""
        preferred = FAMILIES[ip_protocol]
        fallback = fallback and preferred != socket.AF_UNSPEC
        key = (keep_alive, preferred, fallback)
        session = self._sessions.get(key)
        if session is None or session.closed:
            connector = _PeerNotingConnector(
                force_close=not keep_alive,
                limit=0,
                use_dns_cache=False,
                family=socket.AF_UNSPEC if fallback else preferred,
                resolver=_PreferringResolver(preferred) if fallback else None,
                enable_cleanup_closed=False,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                trace_configs=[_trace_config()],
                cookie_jar=aiohttp.DummyCookieJar(),  # each request keeps its own (HopRecorder)
                headers={"User-Agent": self._user_agent},
                # Nothing asked or decoded unless a check says `compression:` (as blackbox).
                skip_auto_headers=("Accept-Encoding",),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
            _no_silent_retry(session)
            self._sessions[key] = session
        return session

    async def ssl_for(self, options: TlsOptions, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
        """The SSL context for these options and ALPN protocols, built once, in a thread.

        CA and key files are read there, never on the loop nor per probe. A load error is
        kept and raised again until `forget_tls` (a reload): a broken file is not re-read
        on every run. A shortage of file descriptors is not kept: it says nothing of the files.
        """
        block = TlsBlock(options, alpn)
        task = self._build(block)
        try:
            # Shielded: one probe's deadline must not cancel a build that others wait on.
            return await asyncio.shield(task)
        except TlsSetupError as exc:
            if out_of_descriptors(exc) and self._ssl.get(block) is task:
                del self._ssl[block]  # a shortage passes: the next run builds it again
            raise

    def built_ssl(self, block: TlsBlock) -> ssl.SSLContext | None:
        """The block's context if it is built already (as after apply), without a wait;
        None while it builds or when it failed (`ssl_for` then waits, or raises)."""
        task = self._ssl.get(block)
        if task is None or not task.done() or task.cancelled() or task.exception():
            return None
        return task.result()

    def _build(self, block: TlsBlock) -> asyncio.Task[ssl.SSLContext]:
        task = self._ssl.get(block)
        if task is None:
            build = asyncio.to_thread(build_context, block.options, block.alpn)
            task = asyncio.get_running_loop().create_task(build)
            task.add_done_callback(_retrieve)
            self._ssl[block] = task
        return task

    def prepare_tls(self, blocks: Iterable[TlsBlock]) -> None:
        """Start building each `tls:` block's context now, at load or apply, in threads: a
        check's first run must not pay for reading the CA bundle inside its duration."""
        for block in blocks:
            self._build(block)

    def tls_done(self, blocks: Iterable[TlsBlock]) -> bool:
        """Every one of these blocks' contexts is built, asked without waiting: a run that
        finds them so skips `tls_ready` (its futures), as every run after the first does."""
        return all(self.built_ssl(block) is not None for block in blocks)

    async def tls_ready(self, blocks: Iterable[TlsBlock]) -> bool:
        """Wait until these blocks' contexts are built (before a run's clock starts); a load
        error is left for the probe to report. True when every one was built."""
        built = True
        for options, alpn in blocks:
            try:
                await self.ssl_for(options, alpn)
            except TlsSetupError:
                built = False
        return built

    def remember_peer(self, host: str, port: int, options: TlsOptions, facts: PeerFacts) -> None:
        """Keep what a handshake with this target showed, for its reused connections."""
        self._peers[(host, port, options)] = facts

    def known_peer(self, host: str, port: int, options: TlsOptions) -> PeerFacts | None:
        """What the last handshake with this target showed, if any."""
        return self._peers.get((host, port, options))

    def forget_tls(self) -> None:
        """Drop the built SSL contexts so the next probes read the files again (on reload).

        A build still running is left to finish for the probes already waiting on it.
        """
        self._ssl.clear()
        self._peers.clear()

    async def close(self) -> None:
        for task in self._ssl.values():
            task.cancel()
        self._ssl.clear()
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


class RequestBody(aiohttp.payload.Payload):
    """A request body whose connection can be cut off when its run gives up.

    aiohttp closes a cancelled request's connection gracefully: the transport first sends
    what it buffered, so a peer that never reads keeps the socket and the unsent body alive
    until it lets go, one more per run. `abandon()` aborts the transport, freeing both.
    """

    _value: bytes
    _autoclose = True  # bytes in memory: nothing to close, reusable on a redirect

    def __init__(self, data: bytes) -> None:
        super().__init__(data)  # Content-Type application/octet-stream unless a header says
        self._size = len(data)
        self._transport: asyncio.Transport | None = None

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._value.decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._transport = getattr(writer, "transport", None)
        data = self._value if content_length is None else self._value[:content_length]
        await writer.write(data)

    def abandon(self) -> None:
        """Abort the connection this body went out on, dropping whatever is still unsent."""
        if self._transport is not None:
            self._transport.abort()


def _retrieve(task: asyncio.Task[ssl.SSLContext]) -> None:
    """Mark a build's error as seen: the probes that await it report it."""
    if not task.cancelled():
        task.exception()


@dataclass
class ProbeContext:
    """One attempt's context: shared clients, its deadline, values, sessions and the recorder
    the runner reads if it has to cut the attempt short.

    `redactor` hides the environment's secrets plus those the run learns (extracted values):
    a flow widens it as it goes, so whatever ends the run can still hide them all.
    """

    clients: HttpClients
    deadline: float
    values: TemplateValues
    redactor: Redactor
    sessions: SessionStore
    recorder: StepRecorder = field(default_factory=StepRecorder)
    # Components whose session steps log in afresh even where a login is cached: a run made
    # to re-check a component (a confirmation or a sweep) must exercise it, not reuse a token.
    fresh_for: frozenset[str] = frozenset()
    # A pooled flow's accounts for this run, and (in each account's own context) the one
    # it runs as: `${account}` in its templates, and its own login sessions.
    accounts: tuple[str, ...] = ()
    account: str = ""

    def for_account(self, account: str) -> ProbeContext:
        """A context of its own for one account of a pooled run: same deadline and clients."""
        return replace(self, recorder=StepRecorder(), accounts=(), account=account)

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

"""A standalone WebSocket exchange: connect, upgrade, optionally send one text message, then
wait for a message matching a regex within a time.

It runs on aiohttp's own client (`ws_connect`), in a session of its own with one connection
that is never reused, so every exchange pays for its DNS, connect, TLS and upgrade as a
first-time client would. Phases are stamped by aiohttp trace hooks (resolve, connection
made) and by the TLS handshake's own stamps (`tls.TimedSSLObject`, which
`tls.build_context` installs; with another context the handshake counts as connect). The
deadline is enforced here, so a timeout can say where it hung; `within` bounds the wait for
the message on its own. Failures are `WsError`s that name their phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import ssl
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import aiohttp
from yarl import URL

from prober.probes.net.dial import host_port, ssl_text
from prober.probes.net.h1_values import TlsSession
from prober.probes.net.tls import TimedSSLObject, collect_handshakes
from prober.probes.net.ws_values import (
    Closed,
    ConnectFailed,
    ConnectRefused,
    DeadlineReached,
    HandshakeRefused,
    InvalidRequest,
    MessageTimeout,
    NetworkError,
    NoMatchingMessage,
    Phase,
    ProtocolError,
    ResolveFailed,
    Timeline,
    TlsFailed,
    WsError,
    WsRequest,
    WsResponse,
)

__all__ = [
    "Closed",
    "ConnectFailed",
    "ConnectRefused",
    "DeadlineReached",
    "HandshakeRefused",
    "InvalidRequest",
    "MessageTimeout",
    "NetworkError",
    "NoMatchingMessage",
    "Phase",
    "ProtocolError",
    "ResolveFailed",
    "Timeline",
    "TlsFailed",
    "WsError",
    "WsRequest",
    "WsResponse",
    "exchange",
]

_SCHEMES = {"ws": False, "wss": True}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUES = re.compile(r"[\r\n\x00]")
# How long a polite close (our close frame, the server's answer) may take after a match.
_CLOSE_S = 1.0
_CLOSING_TYPES = frozenset(
    {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED}
)


@dataclass
class _Stamps:
    """What the trace hooks and the handshakes record while the exchange runs."""

    literal: bool  # the host is an IP address: nothing to resolve
    started: float = field(default_factory=time.perf_counter)
    dns_end: float = 0.0
    conn_end: float = 0.0
    upgraded: float = 0.0
    matched: float = 0.0
    ended: float = 0.0
    handshakes: list[TimedSSLObject] = field(default_factory=list)

    def timeline(self) -> Timeline:
        """The phases so far; a failed exchange's `ended` is when it failed (or now)."""
        handshake = self.handshakes[0] if self.handshakes else None
        resolved = self.started if self.literal else self.dns_end
        connected = (handshake.handshake_started if handshake else 0.0) or self.conn_end
        secured = (handshake.handshake_done if handshake else 0.0) or self.conn_end
        return Timeline(
            started=self.started,
            resolved=resolved,
            connected=connected,
            secured=secured,
            upgraded=self.upgraded,
            matched=self.matched,
            ended=self.ended or time.perf_counter(),
        )


def _trace(stamps: _Stamps) -> aiohttp.TraceConfig:
    """Trace hooks that stamp the end of resolution and of the connection's creation."""

    async def dns_end(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: object) -> None:
        stamps.dns_end = time.perf_counter()

    async def conn_end(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: object
    ) -> None:
        stamps.conn_end = time.perf_counter()

    trace = aiohttp.TraceConfig()
    trace.on_dns_resolvehost_end.append(dns_end)
    trace.on_connection_create_end.append(conn_end)
    return trace


def _checked_url(request: WsRequest) -> URL:
    """The URL, if it is ws:// or wss:// with a host (and wss has a context)."""
    try:
        url = URL(request.url)
        port = url.port
    except ValueError:
        raise InvalidRequest("invalid url: it cannot be parsed") from None
    if url.scheme not in _SCHEMES or not url.host or port == 0:
        raise InvalidRequest("invalid url: it needs ws:// or wss:// and a host")
    if _SCHEMES[url.scheme] and request.ssl_context is None:
        raise InvalidRequest("a wss:// exchange needs an ssl_context")
    for name, value in request.headers:
        if not _TOKEN.fullmatch(name):
            raise InvalidRequest("a header name is not a valid HTTP token")
        if _FORBIDDEN_IN_VALUES.search(value):
            raise InvalidRequest(f"the value of header {name} has a line break or NUL")
    if url.user is not None and any(k.lower() == "authorization" for k, _ in request.headers):
        raise InvalidRequest("the url's userinfo and an Authorization header cannot both be sent")
    return url


async def exchange(request: WsRequest, deadline: float) -> WsResponse:
    """Run `request` on a fresh connection; all of it by `deadline` (loop time).

    Raises a WsError subclass for every failure of the target; anything else is a bug.
    """
    url = _checked_url(request)
    stamps = _Stamps(literal=_is_ip_literal(url.host or ""))
    connector = aiohttp.TCPConnector(
        force_close=True, limit=1, use_dns_cache=False, family=request.family
    )
    session = aiohttp.ClientSession(
        connector=connector,
        trace_configs=[_trace(stamps)],
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    ws: aiohttp.ClientWebSocketResponse | None = None
    try:
        async with asyncio.timeout_at(deadline):
            ws = await _open(session, url, request, stamps)
            return await _converse(ws, request, stamps)
    except TimeoutError:
        timeline = stamps.timeline()
        raise DeadlineReached(f"deadline reached in {timeline.phase}", timeline) from None
    except WsError as exc:
        stamps.ended = stamps.ended or time.perf_counter()
        if exc.timeline is None:
            exc.timeline = stamps.timeline()
        raise
    finally:
        if ws is not None:
            await _close_politely(ws, deadline)
        await session.close()


async def _open(
    session: aiohttp.ClientSession, url: URL, request: WsRequest, stamps: _Stamps
) -> aiohttp.ClientWebSocketResponse:
    """Connect and upgrade; stamps `upgraded` once the 101 is accepted."""
    tls = _SCHEMES[url.scheme]
    handshakes = collect_handshakes(stamps.handshakes) if tls else contextlib.nullcontext()
    try:
        with handshakes:
            ws = await session.ws_connect(
                url,
                headers=list(request.headers),
                protocols=request.protocols,
                ssl=request.ssl_context if tls and request.ssl_context is not None else False,
                server_hostname=request.server_hostname if tls else None,
                max_msg_size=request.max_message_bytes,
                autoclose=True,
                autoping=True,
                heartbeat=None,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_CLOSE_S),
            )
    except aiohttp.ClientError as exc:
        raise _connect_error(exc, url, stamps) from exc
    stamps.upgraded = time.perf_counter()
    return ws


def _connect_error(exc: aiohttp.ClientError, url: URL, stamps: _Stamps) -> WsError:
    """The WsError for what `ws_connect` raised; messages name host and port only."""
    where = host_port(url.host or "", url.port or 0)
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        if exc.status == 101:
            return ProtocolError(f"invalid WebSocket upgrade: {exc.message}")
        return HandshakeRefused(exc.status)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        os_error = error if isinstance(error, OSError) else ssl.SSLError(str(error))
        return TlsFailed(f"tls handshake failed: {ssl_text(os_error)}", os_error)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ResolveFailed(f"cannot resolve {url.host}: {exc.os_error.strerror or exc.os_error}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ssl.SSLError) or stamps.handshakes:
            return TlsFailed(f"tls handshake failed: {ssl_text(os_error)}", os_error)
        if isinstance(os_error, ConnectionRefusedError):
            return ConnectRefused(f"connection refused by {where}")
        return ConnectFailed(f"cannot connect to {where}: {os_error.strerror or os_error}")
    if isinstance(exc, aiohttp.InvalidUrlClientError):
        return InvalidRequest("invalid url: it cannot be requested")
    return ConnectFailed(f"the connection to {where} failed during the upgrade ({_kind(exc)})")


async def _converse(
    ws: aiohttp.ClientWebSocketResponse, request: WsRequest, stamps: _Stamps
) -> WsResponse:
    """Send, then wait for the expected message (within `within` of the upgrade)."""
    loop = asyncio.get_running_loop()
    read = 0
    message: str | None = None
    limit = loop.time() + request.within if request.within is not None else None
    try:
        async with asyncio.timeout_at(limit):
            if request.send is not None:
                await ws.send_str(request.send)
            if request.expect is not None:
                while True:
                    text = await _next_message(ws)
                    read += 1
                    if request.expect.found_in(text):
                        message = text
                        break
    except TimeoutError:
        stamps.ended = time.perf_counter()
        seconds = f"{request.within:g}s"
        if read:
            noun = "message" if read == 1 else "messages"
            text = f"no message matched within {seconds} ({read} {noun} received)"
            raise NoMatchingMessage(read, text) from None
        raise MessageTimeout(0, f"no message within {seconds}") from None
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise Closed(None, f"the connection broke ({_kind(exc)})") from None
    stamps.matched = stamps.ended = time.perf_counter()
    return WsResponse(
        status=101,
        protocol=ws.protocol,
        message=message,
        messages=read,
        tls=_tls_session(ws),
        timeline=stamps.timeline(),
    )


async def _next_message(ws: aiohttp.ClientWebSocketResponse) -> str:
    """The next data message as text; Closed or ProtocolError when none can come."""
    while True:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            return str(msg.data)
        if msg.type is aiohttp.WSMsgType.BINARY:
            return bytes(msg.data).decode("utf-8", "replace")
        if msg.type in _CLOSING_TYPES:
            code = ws.close_code
            if code is None or code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE:
                raise Closed(None, "the server dropped the connection")
            raise Closed(code, f"the server closed the WebSocket with code {code}")
        if msg.type is aiohttp.WSMsgType.ERROR:
            error = msg.data if isinstance(msg.data, BaseException) else ws.exception()
            if isinstance(error, aiohttp.WebSocketError):
                raise ProtocolError(f"invalid WebSocket data: {error}")
            raise Closed(None, f"the connection broke ({_kind(error)})")
        # PING, PONG and CONTINUATION are handled (or assembled) by aiohttp itself.


async def _close_politely(ws: aiohttp.ClientWebSocketResponse, deadline: float) -> None:
    """Send our close frame and wait briefly for the server's, never past the deadline.

    Past it, the close is cancelled at once, and aiohttp then drops the connection.
    """
    if ws.closed:
        return
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TimeoutError, aiohttp.ClientError, ConnectionError):
        async with asyncio.timeout_at(min(deadline, loop.time() + _CLOSE_S)):
            await ws.close()


def _tls_session(ws: aiohttp.ClientWebSocketResponse) -> TlsSession | None:
    ssl_object = ws.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    return TlsSession(ssl_object.version(), ssl_object.getpeercert(binary_form=True))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _kind(exc: BaseException | None) -> str:
    """A failure's kind without its text (which may quote a URL): the class name."""
    return type(exc).__name__ if exc is not None else "no error given"

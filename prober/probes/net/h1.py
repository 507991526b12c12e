"""The lean request path: one HTTP/1.1 request over a fresh connection, on asyncio + httptools
(or HTTP/2 on `h2` where the request asks for it and the server chooses it by ALPN).

A fraction of aiohttp's CPU per probe (docs/PERFORMANCE.md) for the common case: one request,
plain or TLS through the loop's own `create_connection(ssl=...)`, `Connection: close`, no
redirects (the caller follows them), no proxy, no pooling. It resolves and connects
through the shared dial (`dial.dial`: `loop.getaddrinfo`, IP literals skip it, each
address in turn), writes the request from the connection's callback and reads one response
(`h1_exchange.Exchange`). Failures are `H1Error`s that name their phase; the caller maps
them to Reasons.

The deadline is enforced here, so a timeout can say where it hung: a caller's own timeout
around `fetch` should fall later. Connect and TLS are told apart by the handshake's own
stamp (`tls.TimedSSLObject`, which `tls.build_context` installs); with another context the
handshake counts as connect.
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote, urlsplit

from prober.config.model import Compression
from prober.probes.net.alpn import Negotiated
from prober.probes.net.deadline import Deadline
from prober.probes.net.dial import Endpoint, dial
from prober.probes.net.h1_exchange import Exchange
from prober.probes.net.h1_values import (
    FAILURES,
    BodyTooLarge,
    ConnectFailed,
    ConnectRefused,
    DeadlineReached,
    H1Error,
    H1Request,
    H1Response,
    InvalidRequest,
    InvalidUrl,
    NetworkError,
    PeerReset,
    Phase,
    ProtocolError,
    ResolveFailed,
    ResponseHead,
    Timeline,
    TlsFailed,
    TlsSession,
)
from prober.probes.net.h2_exchange import H2Exchange, request_headers

__all__ = [
    "BodyTooLarge",
    "ConnectFailed",
    "ConnectRefused",
    "DeadlineReached",
    "H1Error",
    "H1Request",
    "H1Response",
    "InvalidRequest",
    "InvalidUrl",
    "NetworkError",
    "PeerReset",
    "Phase",
    "ProtocolError",
    "ResolveFailed",
    "ResponseHead",
    "Timeline",
    "TlsFailed",
    "TlsSession",
    "fetch",
]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUES = re.compile(r"[\r\n\x00]")
# Characters kept as they are in the request target; anything else is percent-encoded, as
# yarl does for aiohttp (existing %XX escapes stay).
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers h1 writes itself: the framing is its own (fresh connection, one body).
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True, eq=False)
class _Target:
    """Where a URL points, made once per URL (`_target` is cached): hashed by identity, so
    keying the request head's cache on it costs no hashing of its fields."""

    scheme: str
    host: str  # without brackets, IDNA-encoded
    port: int
    host_header: str
    request_target: str
    authorization: str | None


async def fetch(request: H1Request, deadline: float) -> H1Response:
    """Send `request` on a fresh connection; the whole response by `deadline` (loop time).

    Raises an H1Error subclass for every failure of the target; anything else is a bug.
    """
    target = _target(request.url)
    tls_context = request.ssl_context if target.scheme == "https" else None
    if target.scheme == "https" and tls_context is None:
        raise InvalidRequest("an https request needs an ssl_context")
    loop = asyncio.get_running_loop()
    exchange = _exchange(request, target, loop.create_future(), tls_context is not None)
    endpoint = Endpoint(
        target.host, target.port, request.family, tls_context, request.server_hostname
    )
    late = Deadline(loop, deadline)
    try:
        await dial(loop, exchange, endpoint, FAILURES)
        await exchange.done
        response = exchange.response()
    except asyncio.CancelledError:
        if not late.reached():
            raise
        raise _deadline_reached(exchange) from None
    except H1Error as exc:
        if exc.timeline is None:
            exc.timeline = exchange.timeline()
        exc.head = exc.head or exchange.head()
        raise
    finally:
        late.close()
        exchange.abort()
        exchange.release()
        # A failure's traceback holds this frame, and the exchange's future holds the
        # failure: without this the two would keep each other (and the request) alive.
        del exchange
    return response


def _exchange(
    request: H1Request, target: _Target, done: asyncio.Future[None], tls: bool
) -> Exchange | Negotiated:
    """The protocol for the connection: HTTP/1.1, or (https with `http2`) whichever of
    HTTP/1.1 and HTTP/2 the handshake agrees on."""
    http1 = Exchange(
        _request_head(request, target),
        request.method,
        request.max_body_bytes,
        done,
        tls,
        request.compression,
    )
    if not (tls and request.http2):
        return http1
    headers = request_headers(
        request.method,
        target.host_header,
        target.request_target,
        _checked_headers(request.headers),
        _added_headers(request.compression, target, {name.lower() for name, _ in request.headers}),
        request.body,
    )
    http2 = H2Exchange(
        headers, request.body, request.method, request.max_body_bytes, done, request.compression
    )
    return Negotiated(http1, http2)


def _deadline_reached(exchange: Exchange | Negotiated) -> DeadlineReached:
    """The timeout as an H1Error, built here: a local of `fetch` holding it would make a
    cycle (its traceback holds the frame) that keeps the request's bytes until a collection."""
    timeline = exchange.timeline()
    late = DeadlineReached(f"deadline reached in {timeline.phase}", timeline)
    late.head = exchange.head()
    return late


@lru_cache(maxsize=4096)
def _target(url: str) -> _Target:
    """Where the URL points and the request line's target; InvalidUrl when it cannot be sent.

    Cached: a check sends the same URL run after run (an InvalidUrl is raised again each time).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        port_text = "port" in str(exc).lower()
        what = "the port is not a number from 1 to 65535" if port_text else "the host is not valid"
        raise InvalidUrl(f"invalid url: {what}") from None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        raise InvalidUrl("invalid url: it needs http:// or https:// and a host")
    if port == 0:
        raise InvalidUrl("invalid url: the port is not a number from 1 to 65535")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidUrl("invalid url: the host is not a valid name") from None
    default = _DEFAULT_PORTS[scheme]
    port = port or default
    shown = f"[{host}]" if ":" in host else host
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    query = quote(parts.query, safe=_QUERY_SAFE)
    return _Target(
        scheme=scheme,
        host=host,
        port=port,
        host_header=shown if port == default else f"{shown}:{port}",
        request_target=f"{path}?{query}" if query else path,
        authorization=_basic_auth(parts.username, parts.password),
    )


def _basic_auth(username: str | None, password: str | None) -> str | None:
    """Userinfo as aiohttp sends it: Basic, percent-decoded, Latin-1."""
    if username is None:
        return None
    pair = f"{unquote(username)}:{unquote(password or '')}"
    try:
        raw = pair.encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidUrl("invalid url: the userinfo is not Latin-1 text") from None
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _request_head(request: H1Request, target: _Target) -> bytes:
    """The request line, the headers and the body, ready to write."""
    framed = bool(request.body) or request.method in _BODY_METHODS
    length = len(request.body) if framed else None
    head = _head(request.method, target, request.headers, request.compression, length)
    return head + request.body if request.body else head


@lru_cache(maxsize=4096)
def _head(
    method: str,
    target: _Target,
    headers: tuple[tuple[str, str], ...],
    compression: Compression | None,
    length: int | None,
) -> bytes:
    """The request line and the headers (with Content-Length `length` unless None).

    Cached: a check sends the same head run after run, and checking, lowering and joining
    its headers was a good part of the request's own work (an InvalidRequest is raised
    again each time).
    """
    if not _TOKEN.fullmatch(method):
        raise InvalidRequest("the method is not a valid HTTP token")
    given = _checked_headers(headers)
    names = {name.lower() for name, _ in given}
    lines = [f"{method} {target.request_target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {target.host_header}")
    lines.extend(f"{name}: {value}" for name, value in given)
    lines.extend(f"{name}: {value}" for name, value in _added_headers(compression, target, names))
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: close\r\n\r\n")
    return "\r\n".join(lines).encode("utf-8")


def _added_headers(
    compression: Compression | None, target: _Target, names: set[str]
) -> list[tuple[str, str]]:
    """What h1 adds to the request's own headers (`names`, lower-cased), either protocol."""
    added: list[tuple[str, str]] = []
    if "accept" not in names:
        added.append(("Accept", "*/*"))
    if compression and "accept-encoding" not in names:
        added.append(("Accept-Encoding", compression))  # as the aiohttp path asks
    if target.authorization is not None and "authorization" not in names:
        added.append(("Authorization", target.authorization))
    return added


def _checked_headers(headers: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The caller's headers less the framing ones; InvalidRequest for one that would break it."""
    kept: list[tuple[str, str]] = []
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise InvalidRequest("a header name is not a valid HTTP token")
        if _FORBIDDEN_IN_VALUES.search(value):
            raise InvalidRequest(f"the value of header {name} has a line break or NUL")
        if name.lower() not in _FRAMING:
            kept.append((name, value))
    return kept

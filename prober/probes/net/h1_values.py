"""What the lean HTTP/1.1 client takes and gives: a request, a response, its timeline, errors.

Plain frozen values with no I/O, so the step runner can map them to its own Facts and
Reasons without knowing how the bytes moved. Every error names the phase it happened in.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Literal

from prober.config.model import Compression
from prober.config.model_requests import DEFAULT_MAX_BODY_BYTES

Phase = Literal["resolve", "connect", "tls", "processing", "transfer"]

# The stamps of a Timeline in the order a request passes them, each with the phase that
# ends there ("written" ends nothing of its own: the write counts as processing).
_STAMPS: tuple[tuple[str, Phase], ...] = (
    ("resolved", "resolve"),
    ("connected", "connect"),
    ("secured", "tls"),
    ("written", "processing"),
    ("first_byte", "processing"),
    ("last_byte", "transfer"),
)


@dataclass(frozen=True, slots=True)
class H1Request:
    """One request to send over a fresh connection.

    `headers` keep their order and repeats; h1 adds only what framing needs (Host,
    Content-Length, `Connection: close`), aiohttp's default Accept unless given, and
    Accept-Encoding only for a `compression` (which alone makes the body decoded).
    `ssl_context` is used for https URLs only;
    `server_hostname` (SNI and the name the certificate must match) defaults to the URL's
    host. `max_body_bytes` caps the body as decoded, as the checks see it. With `http2`, an
    https request whose `ssl_context` offers h2 by ALPN speaks HTTP/2 if the server chooses
    it (`alpn.Negotiated`); plain http stays HTTP/1.1 (no h2c, as Go's client).
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    family: socket.AddressFamily = socket.AF_UNSPEC
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    compression: Compression | None = None
    http2: bool = False


@dataclass(frozen=True, slots=True)
class Timeline:
    """perf_counter stamps of one request, taken in the transport callbacks; 0.0 = not reached.

    `ended` is when the request ended, with the last byte or with its failure: the phase in
    progress then runs up to it.
    """

    started: float
    resolved: float = 0.0
    connected: float = 0.0
    secured: float = 0.0
    written: float = 0.0
    first_byte: float = 0.0
    last_byte: float = 0.0
    ended: float = 0.0

    @property
    def phase(self) -> Phase:
        """The phase the request was in when it ended (transfer when it completed)."""
        for stamp, phase in _STAMPS:
            if not getattr(self, stamp):
                return phase
        return "transfer"

    def _span(self, begin: float, end: float) -> float:
        """Seconds from `begin` to `end`, or to `ended` for the phase still in progress."""
        end = end or self.ended
        if not begin or not end:
            return 0.0
        return max(end - begin, 0.0)

    @property
    def resolve(self) -> float:
        return self._span(self.started, self.resolved)

    @property
    def connect(self) -> float:
        return self._span(self.resolved, self.connected)

    @property
    def tls(self) -> float:
        return self._span(self.connected, self.secured)

    @property
    def processing(self) -> float:
        """From the request handed to the transport to the first response byte."""
        return self._span(self.written, self.first_byte)

    @property
    def transfer(self) -> float:
        """From the first response byte to the callback that brought the last one."""
        return self._span(self.first_byte, self.last_byte)


@dataclass(frozen=True, slots=True)
class TlsSession:
    """What the handshake showed: the protocol as `ssl` names it ("TLSv1.3") and the leaf's DER.

    `peer_certificate` is there verified or not, so an unverified check still knows its expiry.
    """

    version: str | None
    peer_certificate: bytes | None
    # The chain the server sent (leaf first) and the one verified (empty when off), in DER;
    # filled by h1, whose callers report expiry over the served chain.
    served: tuple[bytes, ...] = ()
    verified: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class H1Response:
    """A complete response.

    `headers` are (name as sent, value) pairs in order, repeats kept. `body` is de-chunked
    and, when the request set `compression`, decoded with it (`encoding.BodyReader`);
    `wire_length` is its length before decoding. `peer_address` is where it came from.
    `content_length` is the header as sent: -1 when absent, 0 when absent on a 204, a 304
    or a HEAD (the lean path reports Go's, `http_judge.wire_content_length`).
    """

    status: int
    reason: str
    http_version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    wire_length: int
    content_length: int
    tls: TlsSession | None
    timeline: Timeline
    peer_address: str = ""

    def header(self, name: str) -> str | None:
        """The last value of a header, by case-insensitive name."""
        wanted = name.lower()
        for key, value in reversed(self.headers):
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """The status line and headers of a response whose body then failed (too large, cut,
    late): what the request still showed, for the caller's facts."""

    status: int
    http_version: str
    headers: tuple[tuple[str, str], ...]
    tls: TlsSession | None
    peer_address: str = ""


class H1Error(Exception):
    """A request that failed. The message never holds the URL's userinfo or query, nor a
    header value; `timeline` (None before any I/O) shows how far it got, `head` the
    response's head when it had arrived."""

    def __init__(self, message: str, timeline: Timeline | None = None) -> None:
        super().__init__(message)
        self.timeline = timeline
        self.head: ResponseHead | None = None

    @property
    def phase(self) -> Phase | None:
        """Where it failed: the phase in progress, None when nothing was sent."""
        return self.timeline.phase if self.timeline is not None else None


class InvalidRequest(H1Error):
    """The request cannot be sent as given (a method or header that would break framing)."""


class InvalidUrl(InvalidRequest):
    """Not an http(s) URL with a host and a port from 1 to 65535."""


class ResolveFailed(H1Error):
    """The host has no address of the asked family (or resolution itself failed)."""


class NetworkError(H1Error):
    """The connection failed below HTTP; the OSError is the `__cause__`."""


class ConnectRefused(NetworkError):
    """Every address refused the connection."""


class ConnectFailed(NetworkError):
    """The TCP connection could not be made (unreachable, no route, out of descriptors)."""


class PeerReset(NetworkError):
    """The peer reset the connection, or closed it before the response began."""


class TlsFailed(H1Error):
    """The TLS handshake failed; `error` is what `ssl` (or the socket) raised, for tls_reason."""

    def __init__(self, message: str, error: OSError, timeline: Timeline | None = None) -> None:
        super().__init__(message, timeline)
        self.error = error


class DeadlineReached(H1Error):
    """The deadline passed; `phase` says where the request hung."""


class BodyTooLarge(H1Error):
    """The body, decoded, is longer than `max_body_bytes`."""


class ProtocolError(H1Error):
    """The response is not valid HTTP/1.x, or its body does not decode as it says."""

"""What the lean HTTP/1.1 client takes and gives: a request, a response, its timeline, errors.

Plain frozen values with no I/O, so the step runner can map them to its own Facts and
Reasons without knowing how the bytes moved. Every error names the phase it happened in.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import ClassVar, Literal

from prober.config.model import Compression
from prober.config.model_requests import DEFAULT_MAX_BODY_BYTES
from prober.probes.net import failures
from prober.probes.net.failures import NetFailure
from prober.probes.net.stamps import DIAL_STAMPS, DialTimeline
from prober.result import Phases

Phase = Literal["resolve", "connect", "tls", "processing", "transfer"]


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
class Timeline(DialTimeline[Phase]):
    """The dial's stamps (`stamps.DialTimeline`), then the request written, the response's
    first byte and its last: `ended` is when the request ended, with the last byte or with
    its failure."""

    STAMPS: ClassVar[tuple[tuple[str, Phase], ...]] = (
        *DIAL_STAMPS,
        ("written", "processing"),  # the write counts as processing: it ends nothing of its own
        ("first_byte", "processing"),
        ("last_byte", "transfer"),
    )
    COMPLETED: ClassVar[Phase] = "transfer"

    written: float = 0.0
    first_byte: float = 0.0
    last_byte: float = 0.0

    @property
    def processing(self) -> float:
        """From the request handed to the transport to the first response byte."""
        return self._span(self.written, self.first_byte)

    @property
    def transfer(self) -> float:
        """From the first response byte to the callback that brought the last one."""
        return self._span(self.first_byte, self.last_byte)

    def phases(self) -> Phases:
        """The five spans above at once, as the step's `Phases`."""
        span = self._span
        return Phases(
            span(self.started, self.resolved),
            span(self.resolved, self.connected),
            span(self.connected, self.secured),
            span(self.written, self.first_byte),
            span(self.first_byte, self.last_byte),
        )


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
    `stream_ended_with_head`: an HTTP/2 answer whose HEADERS frame ended its stream (no
    DATA frame followed), which Go reads as Content-Length 0 when no header says otherwise.
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
    stream_ended_with_head: bool = False

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


class H1Error(NetFailure[Timeline]):
    """A request that failed (`failures.NetFailure`); `head` is the response's head when it
    had arrived."""

    head: ResponseHead | None = None


class InvalidRequest(H1Error):
    """The request cannot be sent as given (a method or header that would break framing)."""


class InvalidUrl(InvalidRequest):
    """Not an http(s) URL with a host and a port from 1 to 65535."""


class ResolveFailed(H1Error, failures.ResolveFailed[Timeline]):
    pass


class NetworkError(H1Error, failures.NetworkError[Timeline]):
    pass


class ConnectRefused(NetworkError, failures.ConnectRefused[Timeline]):
    pass


class ConnectFailed(NetworkError, failures.ConnectFailed[Timeline]):
    pass


class PeerReset(NetworkError):
    """The peer reset the connection, or closed it before the response began."""


class TlsFailed(H1Error, failures.TlsFailed[Timeline]):
    pass


class DeadlineReached(H1Error, failures.DeadlineReached[Timeline]):
    pass


class BodyTooLarge(H1Error):
    """The body, decoded, is longer than `max_body_bytes`."""


class ProtocolError(H1Error):
    """The response is not valid HTTP/1.x, or its body does not decode as it says."""


# The aiohttp path's words for a refusal (net/aiohttp_errors.py): the same refusal reads alike.
FAILURES = failures.Failures(
    ResolveFailed,
    ConnectRefused,
    ConnectFailed,
    TlsFailed,
    refusal="cannot connect to {where}: {error}",
)

"""One unary gRPC call on a fresh connection: an asyncio.Protocol that drives an `h2` state
machine.

The call goes out in `connection_made` (after the TLS handshake when there is one): the
HTTP/2 preface, one HEADERS frame and one DATA frame that ends the stream. Each stamp is
taken in a transport callback as the bytes move, as h1_exchange does for HTTP/1.1. The
answer is whole when the stream ends; its status comes from the trailers (or from the
headers of a trailers-only answer).
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.errors import ErrorCodes

from prober.probes.net.grpc_values import (
    CallFailed,
    DeadlineReached,
    GrpcError,
    NetworkError,
    PeerClosed,
    ProtocolError,
    ServiceNotFound,
    Timeline,
    Unimplemented,
)
from prober.probes.net.grpc_wire import GrpcStatus, MessageReader, WireError
from prober.probes.net.h1_values import TlsSession
from prober.probes.net.h2_protocol import H2Protocol, client_connection, code_name

# A health answer is a few bytes; anything near this is not one.
MAX_ANSWER_BYTES = 64 * 1024
# hpack debug-logs every header it encodes and decodes, values included, and metadata carries
# secrets (`authorization`): its loggers never go below INFO, whatever the root level.
logging.getLogger("hpack").setLevel(logging.INFO)
# The server's own status message is kept this long at most (it goes into logs, never labels).
MAX_STATUS_MESSAGE = 200
# What an HTTP status means to gRPC when no grpc-status came (grpc/doc/http-grpc-status-mapping.md).
_HTTP_TO_GRPC = {
    "400": GrpcStatus.INTERNAL,
    "401": GrpcStatus.UNAUTHENTICATED,
    "403": GrpcStatus.PERMISSION_DENIED,
    "404": GrpcStatus.UNIMPLEMENTED,
    "429": GrpcStatus.UNAVAILABLE,
    "502": GrpcStatus.UNAVAILABLE,
    "503": GrpcStatus.UNAVAILABLE,
    "504": GrpcStatus.UNAVAILABLE,
}
# What a RST_STREAM code means to gRPC (grpc/doc/PROTOCOL-HTTP2.md, "Errors").
_RESET_TO_GRPC: dict[int, GrpcStatus] = {
    ErrorCodes.REFUSED_STREAM: GrpcStatus.UNAVAILABLE,
    ErrorCodes.CANCEL: GrpcStatus.CANCELLED,
    ErrorCodes.ENHANCE_YOUR_CALM: GrpcStatus.RESOURCE_EXHAUSTED,
    ErrorCodes.INADEQUATE_SECURITY: GrpcStatus.PERMISSION_DENIED,
}


def status_error(status: GrpcStatus, message: str) -> GrpcError:
    """The error for a call that ended with a non-OK status."""
    if status is GrpcStatus.NOT_FOUND:
        return ServiceNotFound(status, message)
    if status is GrpcStatus.UNIMPLEMENTED:
        return Unimplemented(status, message)
    if status is GrpcStatus.DEADLINE_EXCEEDED:
        return DeadlineReached(f"deadline reached in check (the server says: {message})")
    return CallFailed(status, message)


class UnaryCall(H2Protocol):
    """Sends one request message when the connection is ready and reads one answer.

    `done` resolves when the answer is whole and OK, or fails with a GrpcError (or, for a bug
    in this code, the exception itself). The owner sets `resolved`, then reads `answer`.
    """

    RESET = PeerClosed
    BROKEN = NetworkError
    PEER = "server"

    def __init__(
        self,
        headers: list[tuple[str, str]],
        message: bytes,
        done: asyncio.Future[None],
        tls: bool,
    ) -> None:
        super().__init__(done)
        self._h2 = client_connection(header_encoding="utf-8")
        self._request_headers = headers
        self._message = message
        self._tls = tls
        self._answered = 0.0
        self._stream_id = 0
        self._reader = MessageReader(MAX_ANSWER_BYTES)
        self._headers: dict[str, str] | None = None
        self._trailers: dict[str, str] = {}
        self.session: TlsSession | None = None
        self.answer = b""

    # Transport callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connection_ready(transport)
        try:
            if self._tls:
                self._check_alpn(transport)
            self._h2.initiate_connection()
            self._stream_id = self._h2.get_next_available_stream_id()
            self._h2.send_headers(self._stream_id, self._request_headers)
            self._h2.send_data(self._stream_id, self._message, end_stream=True)
            self._flush()
        except Exception as exc:  # ALPN refused, or a bug: either must end the call
            self._fail(exc)

    def _answered_in_http1(self) -> Exception:
        return ProtocolError("the server answered in HTTP/1.x, not HTTP/2")

    def _failure(self, exc: Exception) -> Exception | None:
        if isinstance(exc, h2.exceptions.ProtocolError):
            return ProtocolError(f"invalid HTTP/2 from the server: {type(exc).__name__}")
        if isinstance(exc, WireError):
            return ProtocolError(f"invalid gRPC answer: {exc}")
        return exc if isinstance(exc, GrpcError) else None

    # HTTP/2 events.

    def _handle(self, event: h2.events.Event, now: float) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._headers = _header_map(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self._reader.feed(event.data)
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self._trailers = _header_map(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            self._complete(now)
        elif isinstance(event, h2.events.StreamReset):
            status = _RESET_TO_GRPC.get(event.error_code, GrpcStatus.INTERNAL)
            raise status_error(
                status, f"the server reset the stream ({code_name(event.error_code)})"
            )
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise PeerClosed(
                f"the server closed the connection (GOAWAY {code_name(event.error_code)})"
            )

    def _complete(self, now: float) -> None:
        """The stream ended: judge the status, keep the one message, hang up."""
        headers = self._headers
        if headers is None:
            raise ProtocolError("the stream ended without response headers")
        final = self._trailers or headers  # a trailers-only answer has its status in the headers
        raw_status = final.get("grpc-status")
        if raw_status is None:
            http_status = headers.get(":status", "")
            if http_status != "200":
                status = _HTTP_TO_GRPC.get(http_status, GrpcStatus.UNKNOWN)
                raise status_error(status, f"HTTP status {http_status} without a gRPC status")
            raise ProtocolError("the answer has no grpc-status")
        status = _parse_status(raw_status)
        if status is not GrpcStatus.OK:  # some servers leave content-type out of these
            raise status_error(status, _status_message(final.get("grpc-message", "")))
        if not headers.get("content-type", "").startswith("application/grpc"):
            raise ProtocolError("the answer's content-type is not application/grpc")
        if len(self._reader.messages) != 1 or self._reader.pending:
            raise ProtocolError(f"{len(self._reader.messages)} messages in a unary answer")
        self.answer = self._reader.messages[0]
        self._answered = now
        self._succeed(now)

    # Outcome.

    def _check_alpn(self, transport: asyncio.BaseTransport) -> None:
        """A TLS server that chose a protocol other than h2 will not speak gRPC."""
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        self.session = TlsSession(ssl_object.version(), ssl_object.getpeercert(binary_form=True))
        chosen = ssl_object.selected_alpn_protocol()
        if chosen not in (None, "h2"):
            raise ProtocolError(f"the server chose ALPN {chosen!r}, not h2")

    def _hung_up(self) -> None:
        if not self._any_byte:
            self._fail(PeerClosed("the server closed the connection without a word of HTTP/2"))
        else:
            self._fail(PeerClosed("the server closed the connection before the answer ended"))

    def timeline(self) -> Timeline:
        """The stamps so far; a failed call's `ended` is when it failed (or now)."""
        return self._timeline(Timeline, answered=self._answered)


def _header_map(headers: object) -> dict[str, str]:
    """Header pairs as a dict by lower-case name (the last of a repeated name wins)."""
    pairs = cast(list[tuple[str, str]], headers)
    return {str(name).lower(): str(value) for name, value in pairs}


def _parse_status(raw: str) -> GrpcStatus:
    """A grpc-status value; a code this side does not know is UNKNOWN, as gRPC says."""
    if not raw.isdigit():
        raise ProtocolError("grpc-status is not a number")
    try:
        return GrpcStatus(int(raw))
    except ValueError:
        return GrpcStatus.UNKNOWN


def _status_message(raw: str) -> str:
    """grpc-message, percent-decoded, printable and short: the server's words, for a log."""
    text = unquote(raw, errors="replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    if len(text) > MAX_STATUS_MESSAGE:
        text = text[: MAX_STATUS_MESSAGE - 3] + "..."
    return text or "no message"

"""One HTTP/2 exchange on a fresh TLS connection: an asyncio.Protocol that drives an `h2`
state machine, for the lean path's requests with `http2: true` whose server chose h2.

An `http_exchange.HttpExchange` as h1_exchange is, on `h2_protocol.H2Protocol` as grpc_call
is: the request goes out in `connection_made` (the preface, one HEADERS frame, DATA frames
for the body as flow control allows), every stamp is taken in a transport callback, and the
outcome is h1's own values (`H1Response`, `ResponseHead`, `Timeline`, `H1Error`s), so the
lean path judges both alike. Processing is
from the request sent to the response's HEADERS, transfer from there to its END_STREAM;
trailers are ignored, as Go's client keeps them apart from the headers.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from prober.config.model import Compression
from prober.probes.net.h1_body import BodyBuffer
from prober.probes.net.h1_exchange import (
    MAX_FIELD_BYTES,
    MAX_HEADERS,
    field_text,
    tls_session,
)
from prober.probes.net.h1_values import (
    H1Error,
    InvalidRequest,
    PeerReset,
    ProtocolError,
)
from prober.probes.net.h2_protocol import H2Protocol, client_connection, code_name
from prober.probes.net.http_exchange import HttpExchange

# What `http_version` says of an HTTP/2 response: Go's resp.Proto is "HTTP/2.0".
HTTP2_VERSION = "2.0"
# Headers of HTTP/1.1's connection management, which HTTP/2 forbids (RFC 9113 §8.2.2).
_CONNECTION_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"}
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Our SETTINGS: no server push; h2's own defaults otherwise (100 streams, 64 KiB head list).
_SETTINGS = {
    h2.settings.SettingCodes.ENABLE_PUSH: 0,
    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
}


def request_headers(
    method: str,
    authority: str,
    path: str,
    given: list[tuple[str, str]],
    extra: list[tuple[str, str]],
    body: bytes,
) -> list[tuple[bytes, bytes]]:
    """The request's HEADERS as HTTP/2 sends them: the pseudo-headers first (a Host header
    given becomes `:authority`, as Go sends it), names lower-cased, connection headers left
    out; `given` are the check's (already checked by h1), `extra` what h1 would add."""
    host = next((v for n, v in given if n.lower() == "host"), authority)
    headers = [(":method", method), (":authority", host), (":scheme", "https"), (":path", path)]
    for name, value in (*given, *extra):
        lowered = name.lower()
        if lowered in _CONNECTION_HEADERS or (lowered == "te" and value.lower() != "trailers"):
            continue
        headers.append((lowered, value.strip()))  # h2 refuses a value with outer spaces
    if body or method in _BODY_METHODS:
        headers.append(("content-length", str(len(body))))
    return [(name.encode("ascii"), value.encode("utf-8")) for name, value in headers]


class H2Exchange(HttpExchange, H2Protocol):
    """Sends one request on stream 1 when the connection is ready and reads its response
    (`http_exchange.HttpExchange`) once the stream has ended."""

    def __init__(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        method: str,
        cap: int,
        done: asyncio.Future[None],
        compression: Compression | None = None,
    ) -> None:
        super().__init__(method, cap, done, compression)
        self._h2 = client_connection(header_encoding=None)
        self._request_headers = headers
        self._outgoing = body
        self._sent = 0
        self._request_ended = False
        self._h2.local_settings = h2.settings.Settings(client=True, initial_values=_SETTINGS)
        self._stream = 1

    # Transport callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connection_ready(transport)
        try:
            self._session = tls_session(transport)
            self._h2.initiate_connection()
            self._stream = self._h2.get_next_available_stream_id()
            empty = not self._outgoing  # a POST without one says `content-length: 0`
            self._h2.send_headers(self._stream, self._request_headers, end_stream=empty)
            self._request_headers = []
            self._request_ended = empty
            self._send_body()
        except h2.exceptions.ProtocolError as exc:
            # Never h2's words here: they would quote a header value of the request.
            kind = type(exc).__name__
            self._fail(InvalidRequest(f"the request cannot be sent over HTTP/2 ({kind})"))
        except Exception as exc:  # a bug here must end the request, not leave it to hang
            self._fail(exc)

    def _answered_in_http1(self) -> Exception:
        return ProtocolError("the server chose h2 by ALPN but answered in HTTP/1.x")

    def _failure(self, exc: Exception) -> Exception | None:
        if isinstance(exc, h2.exceptions.ProtocolError):
            return ProtocolError(f"invalid HTTP/2 from the server: {_h2_text(exc)}")
        return exc if isinstance(exc, H1Error) else None

    def _events_handled(self) -> None:
        self._send_body()

    # HTTP/2 events.

    def _handle(self, event: h2.events.Event, now: float) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._head_arrived(event, now)
        elif isinstance(event, h2.events.DataReceived):
            if self._body is not None and event.data:
                self._body.feed(event.data)
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._complete(now)
        elif isinstance(event, h2.events.StreamReset):
            raise PeerReset(f"the server reset the stream ({code_name(event.error_code)})")
        elif isinstance(event, h2.events.ConnectionTerminated):
            graceful = event.error_code == ErrorCodes.NO_ERROR
            if not graceful or (event.last_stream_id or 0) < self._stream:
                raise PeerReset(
                    f"the server closed the connection (GOAWAY {code_name(event.error_code)})"
                )
        # Trailers, interim (1xx) heads, SETTINGS and WINDOW_UPDATE need nothing more here:
        # `_send_body` goes on with the body once the window has room.

    def _head_arrived(self, event: h2.events.ResponseReceived, now: float) -> None:
        raw = cast(list[tuple[bytes, bytes]], event.headers or [])
        headers: list[tuple[str, str]] = []
        for name, value in raw:
            if name == b":status":
                self._status = int(value)  # h2 has checked it is three digits
            elif not name.startswith(b":"):
                if len(name) > MAX_FIELD_BYTES or len(value) > MAX_FIELD_BYTES:
                    raise ProtocolError(f"a response header is longer than {MAX_FIELD_BYTES} bytes")
                headers.append((name.decode("latin-1"), field_text(value)))
        if len(headers) > MAX_HEADERS:
            raise ProtocolError(f"more than {MAX_HEADERS} response headers")
        self._headers = headers
        self._stream_ended_with_head = event.stream_ended is not None
        self._first_byte = now
        self._body = BodyBuffer(self._cap, self._compression)

    def _complete(self, now: float) -> None:
        """The response's stream ended: keep the body, stamp its end, hang up."""
        if self._body is None:
            raise ProtocolError("the stream ended without response headers")
        self._result = self._body.finish()
        self._last_byte = now
        self._succeed(now)

    # The request's body, as flow control allows.

    def _send_body(self) -> None:
        """Send what the stream's window allows; end the stream with the last of it."""
        if not self._request_ended:
            connection, stream = self._h2, self._stream
            while self._sent < len(self._outgoing):
                room = min(
                    connection.local_flow_control_window(stream),
                    connection.max_outbound_frame_size,
                    len(self._outgoing) - self._sent,
                )
                if room <= 0:
                    break
                connection.send_data(stream, self._outgoing[self._sent : self._sent + room])
                self._sent += room
            if self._sent >= len(self._outgoing):
                connection.end_stream(stream)
                self._request_ended = True
                self._outgoing = b""  # not kept for the run's rest (h1_exchange does the same)
        self._flush()
        if self._request_ended and not self._written:
            self._written = time.perf_counter()

    # Outcome.

    def _hung_up(self) -> None:
        if self._body is None:
            what = "response" if not self._any_byte else "response headers"
            self._fail(PeerReset(f"the server closed the connection before the {what}"))
        else:
            self._fail(ProtocolError("the server closed the connection before the body ended"))

    def release(self) -> None:
        """Drop the transport and the request once the exchange is over (after `abort`)."""
        self._transport = None
        self._outgoing = b""

    def _http_version(self) -> str:
        return HTTP2_VERSION

    def _reason_phrase(self) -> str:
        return ""  # HTTP/2 has no reason phrase

    def _has_head(self) -> bool:
        return self._body is not None

    def _declared_length(self) -> int | None:
        raw = next((v for n, v in reversed(self._headers) if n == "content-length"), None)
        return int(raw) if raw is not None and raw.strip().isdigit() else None


def _h2_text(exc: h2.exceptions.ProtocolError) -> str:
    """h2's own words about what the server sent, without the bytes it quotes (a header
    value), short and printable; else the error's kind."""
    text = str(exc).split(" b'", 1)[0].split(' b"', 1)[0].rstrip(" :.")
    return text if text and len(text) <= 120 and text.isprintable() else type(exc).__name__

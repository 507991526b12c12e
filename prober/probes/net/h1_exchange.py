"""One HTTP/1.1 exchange on a fresh connection: an asyncio.Protocol that feeds httptools.

The request goes out in `connection_made` (after the TLS handshake for https) and every
timestamp is taken in a transport callback as the bytes move, never after an await returns,
so the event loop's other work does not stretch what is reported.
"""

from __future__ import annotations

import asyncio
import time

import httptools

from prober.config.model import Compression
from prober.probes.net.certs import served_chain, verified_chain
from prober.probes.net.h1_body import BodyBuffer
from prober.probes.net.h1_values import (
    H1Error,
    PeerReset,
    ProtocolError,
    TlsSession,
)
from prober.probes.net.http_exchange import HttpExchange

# aiohttp's client limits, so both paths refuse the same heads.
MAX_HEADERS = 128
MAX_FIELD_BYTES = 8190
# A head still unfinished after this many bytes is refused (bounds what httptools buffers).
MAX_HEAD_BYTES = MAX_HEADERS * MAX_FIELD_BYTES
_NO_BODY_STATUSES = frozenset({204, 304})
# The headers that frame the body, kept apart as they arrive (the last one of each counts).
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"content-encoding"})


class Exchange(HttpExchange):
    """Writes one request when the connection is ready and reads one response
    (`http_exchange.HttpExchange`)."""

    def __init__(
        self,
        request: bytes,
        method: str,
        cap: int,
        done: asyncio.Future[None],
        tls: bool,
        compression: Compression | None = None,
    ) -> None:
        super().__init__(method, cap, done, compression)
        self._request = request
        self._tls = tls
        self._arrived = 0.0
        # Refers back to this exchange (its callbacks): `release` breaks the cycle.
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._version = ""
        self._head_bytes = 0
        self._begin_message()

    def _begin_message(self) -> None:
        self._status = 0
        self._reason = b""
        self._headers = []
        self._framing: dict[bytes, str] = {}
        self._interim = False
        self._headers_done = False
        self._until_eof = False
        self._body = None
        self._result = b""

    # Transport callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ready = self._connection_ready(transport)
        try:
            if self._tls:
                self._session = tls_session(transport)
            ready.write(self._request)
        except Exception as exc:  # a bug here must end the request, not leave it to hang
            self._fail(exc)
            return
        # The transport keeps what it has not sent yet. The exchange and its parser refer to
        # each other (a cycle, freed by a collection), so it must not keep the request too:
        # a large body that a peer never reads would outlive the run (the abort frees it).
        self._request = b""
        self._written = time.perf_counter()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self._finished:
            return
        if not self._first_byte:
            self._first_byte = now
        self._arrived = now
        parser = self._parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause if cause is not None else ProtocolError("invalid HTTP response"))
            return
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols, which was not asked for"))
            return
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP response: {exc}"))
            return
        if not self._headers_done and not self._finished:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(ProtocolError(f"response head longer than {MAX_HEAD_BYTES} bytes"))

    # httptools callbacks.

    def on_message_begin(self) -> None:
        if self._interim:  # the real response after a 1xx starts afresh (the first is fresh)
            self._begin_message()

    def on_status(self, status: bytes) -> None:
        self._reason += status
        if len(self._reason) > MAX_FIELD_BYTES:
            raise ProtocolError(f"status line longer than {MAX_FIELD_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers_done:
            return  # a trailer after a chunked body: not part of the response's headers
        if len(name) > MAX_FIELD_BYTES or len(value) > MAX_FIELD_BYTES:
            raise ProtocolError(f"a response header is longer than {MAX_FIELD_BYTES} bytes")
        if len(self._headers) >= MAX_HEADERS:
            raise ProtocolError(f"more than {MAX_HEADERS} response headers")
        text = field_text(value)
        self._headers.append((name.decode("latin-1"), text))
        lowered = name.lower()
        if lowered in _FRAMING:
            self._framing[lowered] = text

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # it is calling us
        status = parser.get_status_code()
        self._version = parser.get_http_version()
        self._status = status
        if 100 <= status < 200:
            self._interim = True  # 100 Continue and the like: the real response follows
            return
        self._headers_done = True
        if self._is_head:
            self._complete()
            return
        framing = self._framing
        coding = framing.get(b"transfer-encoding")
        chunked = coding is not None and coding.rsplit(",", 1)[-1].strip().lower() == "chunked"
        self._until_eof = (
            b"content-length" not in framing and not chunked and status not in _NO_BODY_STATUSES
        )
        self._body = BodyBuffer(self._cap, self._compression)

    def on_body(self, body: bytes) -> None:
        if self._body is not None and not self._finished:
            self._body.feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            return  # on_message_begin starts the real response afresh
        if not self._finished:
            self._complete()

    # Outcome.

    def _complete(self) -> None:
        """The response is whole: keep the body, stamp its last byte, hang up."""
        self._result = self._body.finish() if self._body is not None else b""
        self._last_byte = self._arrived
        self._succeed(self._arrived)

    def _hung_up(self) -> None:
        if not self._headers_done:
            what = "response" if not self._first_byte else "response head ended"
            self._fail(PeerReset(f"the server closed the connection before the {what}"))
        elif self._until_eof:
            try:
                self._complete()
            except H1Error as error:
                self._fail(error)
        else:
            self._fail(ProtocolError("the server closed the connection before the body ended"))

    def release(self) -> None:
        """Drop the parser and the transport once the exchange is over (after `abort`).

        Both refer back to the exchange; under uvloop nothing else of a probe makes a
        reference cycle, so the daemon collects rarely (engine/loop.py), and cycles left per
        probe would hold their bodies until a full collection.
        """
        self._parser = None
        self._transport = None

    def _http_version(self) -> str:
        return self._version

    def _reason_phrase(self) -> str:
        return self._reason.decode("latin-1")

    def _has_head(self) -> bool:
        return self._headers_done

    def _declared_length(self) -> int | None:
        raw = self._framing.get(b"content-length")
        return int(raw) if raw is not None else None  # llhttp refused it were it no number


def tls_session(transport: asyncio.BaseTransport) -> TlsSession | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    return TlsSession(
        ssl_object.version(),
        ssl_object.getpeercert(binary_form=True),
        tuple(served_chain(ssl_object)),
        tuple(verified_chain(ssl_object)),
    )


def field_text(value: bytes) -> str:
    """A header value as text: UTF-8 when its bytes are UTF-8, else Latin-1 (as step.py)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")

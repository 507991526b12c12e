"""What the lean path's two HTTP exchanges (h1_exchange.Exchange over HTTP/1.1,
h2_exchange.H2Exchange over HTTP/2) keep and give alike: the request's own stamps after the
dial's (written, first byte, last byte), the response's parts, and h1's values built from
them (`H1Response`, `ResponseHead`, `Timeline`), so the lean path judges both alike."""

from __future__ import annotations

import asyncio

from prober.config.model import Compression
from prober.probes.net.h1_body import BodyBuffer
from prober.probes.net.h1_values import (
    H1Response,
    NetworkError,
    PeerReset,
    ResponseHead,
    Timeline,
    TlsSession,
)
from prober.probes.net.stamped import StampedProtocol

_NO_BODY_STATUSES = frozenset({204, 304})


class HttpExchange(StampedProtocol):
    """One request and its response on a fresh connection; `done` resolves when the response
    is whole, or fails with an H1Error. The owner sets `resolved`, then reads `response()`.

    A subclass fills the response's parts as they arrive and says what only its protocol
    knows: the version, the reason phrase, whether the head has arrived and the declared
    Content-Length.
    """

    RESET = PeerReset
    BROKEN = NetworkError

    def __init__(
        self, method: str, cap: int, done: asyncio.Future[None], compression: Compression | None
    ) -> None:
        super().__init__(done)
        self._is_head = method == "HEAD"
        self._cap = cap
        self._compression = compression
        self._peer = ""
        self._session: TlsSession | None = None
        self._written = self._first_byte = self._last_byte = 0.0
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._body: BodyBuffer | None = None
        self._result = b""
        self._stream_ended_with_head = False  # HTTP/2: END_STREAM on the response's HEADERS

    def _connection_ready(self, transport: asyncio.BaseTransport) -> asyncio.Transport:
        ready = super()._connection_ready(transport)
        peername = transport.get_extra_info("peername")
        self._peer = str(peername[0]) if isinstance(peername, tuple) and peername else ""
        return ready

    def _http_version(self) -> str:
        raise NotImplementedError

    def _reason_phrase(self) -> str:
        raise NotImplementedError

    def _has_head(self) -> bool:
        raise NotImplementedError

    def _declared_length(self) -> int | None:
        """The Content-Length the response declared, None without a valid one."""
        raise NotImplementedError

    def timeline(self) -> Timeline:
        """The stamps so far; a failed request's `ended` is when it failed (or now)."""
        return self._timeline(
            Timeline,
            written=self._written,
            first_byte=self._first_byte,
            last_byte=self._last_byte,
        )

    def head(self) -> ResponseHead | None:
        """The final response's status and headers, once they have arrived."""
        if not self._has_head():
            return None
        return ResponseHead(
            self._status, self._http_version(), tuple(self._headers), self._session, self._peer
        )

    def response(self) -> H1Response:
        """The whole response; call once `done` has resolved without error."""
        return H1Response(
            status=self._status,
            reason=self._reason_phrase(),
            http_version=self._http_version(),
            headers=tuple(self._headers),
            body=self._result,
            wire_length=self._body.wire_length if self._body is not None else 0,
            content_length=self._content_length(),
            tls=self._session,
            timeline=self.timeline(),
            peer_address=self._peer,
            stream_ended_with_head=self._stream_ended_with_head,
        )

    def _content_length(self) -> int:
        """The header as sent: -1 when absent, 0 when absent on a 204, a 304 or a HEAD."""
        declared = self._declared_length()
        if declared is not None:
            return declared
        return 0 if self._is_head or self._status in _NO_BODY_STATUSES else -1

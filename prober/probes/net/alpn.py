"""The protocol of a lean request that offered h2 by ALPN: HTTP/2 on the connection when the
TLS handshake agreed on "h2", else HTTP/1.1 on that same connection, as Go's client does.

Both exchanges are made before the connection, sharing one `done` future and one list of
handshakes; the choice is made in `connection_made`, when the handshake is over and the
server's choice is known (`SSLObject.selected_alpn_protocol`), and every later callback goes
to the chosen one.
"""

from __future__ import annotations

import asyncio

from prober.probes.net.dial import Dialed
from prober.probes.net.h1_exchange import Exchange
from prober.probes.net.h1_values import H1Response, ResponseHead, Timeline
from prober.probes.net.h2_exchange import H2Exchange


class Negotiated(Dialed):
    """An h1 `Exchange` or an `H2Exchange`, whichever the server chose; h1 until it has."""

    def __init__(self, http1: Exchange, http2: H2Exchange) -> None:
        if http2.done is not http1.done:
            raise ValueError("both exchanges must share one future")
        self._http1 = http1
        self._http2 = http2
        http2.handshakes = http1.handshakes
        http2.started = http1.started
        self.chosen: Exchange | H2Exchange = http1
        self.done = http1.done
        self.handshakes = http1.handshakes
        self.started = http1.started

    @property
    def resolved(self) -> float:
        return self._http1.resolved

    @resolved.setter
    def resolved(self, value: float) -> None:
        self._http1.resolved = self._http2.resolved = value

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self.chosen = self._http2
        self.chosen.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.chosen.data_received(data)

    def eof_received(self) -> bool | None:
        return self.chosen.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.chosen.connection_lost(exc)

    def timeline(self) -> Timeline:
        return self.chosen.timeline()

    def head(self) -> ResponseHead | None:
        return self.chosen.head()

    def response(self) -> H1Response:
        return self.chosen.response()

    def abort(self) -> None:
        self.chosen.abort()

    def release(self) -> None:
        self._http1.release()
        self._http2.release()

"""What the two HTTP/2 protocols (h2_exchange, grpc_call) share: one client-side `h2`
connection on a stamped protocol, its bytes written as they are ready, a GOAWAY before the
clean close, and HTTP/2 error codes by name."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
from h2.errors import ErrorCodes

from prober.probes.net.stamped import StampedProtocol


class H2Protocol(StampedProtocol):
    """A stamped protocol driving one `h2` state machine (`_h2`); `header_encoding` as h2
    takes it (None: headers stay bytes)."""

    def __init__(self, done: asyncio.Future[None], header_encoding: str | None) -> None:
        super().__init__(done)
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=header_encoding)
        )

    def _flush(self) -> None:
        """Write what h2 has ready, unless the transport is gone or closing."""
        outgoing = self._h2.data_to_send()
        if outgoing and self._transport is not None and not self._transport.is_closing():
            self._transport.write(outgoing)

    def _goodbye(self) -> None:
        self._h2.close_connection()
        self._flush()


def code_name(code: ErrorCodes | int | None) -> str:
    """An HTTP/2 error code by name (a number h2 does not know, as a number)."""
    return code.name if isinstance(code, ErrorCodes) else str(code)

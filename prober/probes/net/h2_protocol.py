"""What the two HTTP/2 protocols (h2_exchange, grpc_call) share: one client-side `h2`
connection on a stamped protocol, its bytes written as they are ready, a GOAWAY before the
clean close, and HTTP/2 error codes by name."""

from __future__ import annotations

import time

import h2.config
import h2.connection
import h2.events
from h2.errors import ErrorCodes

from prober.probes.net.stamped import StampedProtocol


class H2Protocol(StampedProtocol):
    """A stamped protocol driving one `h2` state machine, `_h2` (`client_connection`), which
    the subclass makes in its `__init__`."""

    _h2: h2.connection.H2Connection
    _any_byte = False

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self._finished:
            return
        if not self._any_byte and data.startswith(b"HTTP/"):
            self._fail(self._answered_in_http1())
            return
        self._any_byte = True
        try:
            for event in self._h2.receive_data(data):
                self._handle(event, now)
                if self._finished:
                    return
            self._events_handled()
        except Exception as exc:
            failure = self._failure(exc)
            if failure is None:
                raise
            self._fail(failure)

    def _handle(self, event: h2.events.Event, now: float) -> None:
        """Act on one event of what arrived at `now` (perf_counter)."""
        raise NotImplementedError

    def _events_handled(self) -> None:
        """What follows the events of one read, the exchange still going: send what is due."""
        self._flush()

    def _answered_in_http1(self) -> Exception:
        """The failure when the server's first bytes are an HTTP/1.x response."""
        raise NotImplementedError

    def _failure(self, exc: Exception) -> Exception | None:
        """The failure an error raised while handling the server's bytes ends the exchange
        with: the client's own errors as they are, h2's (and wire) errors as its protocol
        error; None for any other, a bug, which is raised on."""
        raise NotImplementedError

    def _flush(self) -> None:
        """Write what h2 has ready, unless the transport is gone or closing."""
        outgoing = self._h2.data_to_send()
        if outgoing and self._transport is not None and not self._transport.is_closing():
            self._transport.write(outgoing)

    def _goodbye(self) -> None:
        self._h2.close_connection()
        self._flush()


def client_connection(header_encoding: str | None) -> h2.connection.H2Connection:
    """A client-side h2 connection; `header_encoding` as h2 takes it (None: bytes)."""
    return h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=header_encoding)
    )


def code_name(code: ErrorCodes | int | None) -> str:
    """An HTTP/2 error code by name (a number h2 does not know, as a number)."""
    return code.name if isinstance(code, ErrorCodes) else str(code)

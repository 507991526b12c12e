"""What the lean clients' protocols (h1_exchange, h2_exchange, grpc_call) share: the dial's
stamps taken in the transport callbacks, and the ways an exchange ends.

`connection_made` stamps `connected` (the handshake's start with TLS) and `secured`; a
failure, a hang-up and an abort stamp `ended` and settle `done` once. Stamps are taken as
the bytes move, never after an await returns, so the loop's other work does not stretch
what is reported.
"""

from __future__ import annotations

import asyncio
import errno
import time
from typing import Any, ClassVar, TypeVar, cast

from prober.probes.net.dial import Dialed
from prober.probes.net.stamps import DialTimeline
from prober.probes.net.tls import TimedSSLObject

TimelineT = TypeVar("TimelineT", bound=DialTimeline[Any])
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


class StampedProtocol(Dialed):
    """One exchange on a fresh connection; `done` resolves when it is over, or fails with
    the client's error (or, for a bug in the subclass, the exception itself).

    A subclass names the errors of a broken connection (`RESET`, `BROKEN`, and the `PEER`
    that reset it), says in `_hung_up` what a clean close before the end means, and sets
    `_finished` when it completes.
    """

    RESET: ClassVar[type[Exception]]
    BROKEN: ClassVar[type[Exception]]
    PEER: ClassVar[str] = "peer"

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.handshakes: list[TimedSSLObject] = []
        self.started = time.perf_counter()
        self.resolved = 0.0
        self._connected = 0.0
        self._secured = 0.0
        self._ended = 0.0
        self._transport: asyncio.Transport | None = None
        self._finished = False

    def _connection_ready(self, transport: asyncio.BaseTransport) -> asyncio.Transport:
        """Stamp the connection ready (call first thing in `connection_made`)."""
        now = time.perf_counter()
        # uvloop's transports are not asyncio.Transport subclasses, but they work as ones.
        self._transport = cast(asyncio.Transport, transport)
        self._connected = self._handshake_started() or now
        self._secured = now
        return self._transport

    def eof_received(self) -> bool | None:
        self._closed(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(exc)

    def _succeed(self, at: float) -> None:
        """The exchange is whole at `at`: settle `done`, say goodbye, hang up."""
        self._finished = True
        self._ended = at
        if not self.done.done():
            self.done.set_result(None)
        if self._transport is not None:
            self._goodbye()
            self._transport.close()

    def _goodbye(self) -> None:
        """What the protocol writes before a clean close (HTTP/2's GOAWAY); nothing here."""

    def _fail(self, exc: BaseException) -> None:
        self._finished = True
        self._ended = self._ended or time.perf_counter()
        if not self.done.done():
            self.done.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()

    def _closed(self, exc: BaseException | None) -> None:
        """The peer hung up (or the transport failed) before the exchange was over."""
        if self._finished:
            return
        if isinstance(exc, OSError) and exc.errno in _RESET_ERRNOS:
            self._fail(self.RESET(f"connection reset by the {self.PEER}: {exc.strerror}"))
        elif exc is not None:
            self._fail(self.BROKEN(f"connection failed: {type(exc).__name__}: {exc}"))
        else:
            self._hung_up()

    def _hung_up(self) -> None:
        """The peer closed the connection cleanly before the exchange was over."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection unless the exchange completed (then it is already closing).

        Aborted, not closed: a peer that never reads must not keep the socket and the
        unsent request alive after the run gave up.
        """
        if not self._finished:
            self._finished = True
            self._ended = self._ended or time.perf_counter()
            if self._transport is not None:
                self._transport.abort()
        if not self.done.done():
            self.done.cancel()
        elif not self.done.cancelled():
            self.done.exception()  # seen: a failure that came after the deadline is moot

    def _handshake_started(self) -> float:
        return self.handshakes[0].handshake_started if self.handshakes else 0.0

    def _timeline(self, kind: type[TimelineT], **stamps: float) -> TimelineT:
        """The stamps so far as `kind`, with the subclass's own `stamps`; a failed
        exchange's `ended` is when it failed (or now)."""
        return kind(
            started=self.started,
            resolved=self.resolved,
            connected=self._connected or self._handshake_started(),
            secured=self._secured,
            ended=self._ended or time.perf_counter(),
            **stamps,
        )

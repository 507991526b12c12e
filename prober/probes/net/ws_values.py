"""What the WebSocket client takes and gives: a request, a response, its timeline, errors.

Plain frozen values with no I/O, as h1_values is for HTTP/1.1. Every error names the phase
it happened in, so the caller maps it to a Reason without knowing how the bytes moved.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import ClassVar, Literal

from prober.config.templates import Regex
from prober.probes.net import failures
from prober.probes.net.failures import NetFailure
from prober.probes.net.h1_values import TlsSession
from prober.probes.net.stamps import DIAL_STAMPS, DialTimeline

Phase = Literal["resolve", "connect", "tls", "handshake", "first_message"]

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class WsRequest:
    """Open a WebSocket on a fresh connection, optionally send one text message, then read
    messages until one matches `expect`, for at most `within` seconds after the upgrade.

    `url` is ws:// or wss:// (wss needs `ssl_context`; `server_hostname` is its SNI and the
    name the certificate must match, by default the URL's host). `headers` go with the
    upgrade request (their values never appear in errors). Without `expect` the exchange
    ends once the upgrade (and the send) is done. A message is text, or binary read as
    UTF-8; one over `max_message_bytes` fails the exchange.
    """

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    send: str | None = None
    expect: Regex | None = None
    within: float | None = None
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    protocols: tuple[str, ...] = ()
    family: socket.AddressFamily = socket.AF_UNSPEC
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


@dataclass(frozen=True, slots=True)
class Timeline(DialTimeline[Phase]):
    """The dial's stamps (`stamps.DialTimeline`), then the upgrade and the message.

    `upgraded` is when the 101 answer was accepted, `matched` when the expected message
    arrived (or the send was done, without `expect`); `ended` is when the exchange ended,
    with its match or its failure.
    """

    STAMPS: ClassVar[tuple[tuple[str, Phase], ...]] = (
        *DIAL_STAMPS,
        ("upgraded", "handshake"),
        ("matched", "first_message"),
    )
    COMPLETED: ClassVar[Phase] = "first_message"

    upgraded: float = 0.0
    matched: float = 0.0

    @property
    def handshake(self) -> float:
        """The HTTP upgrade: from the connection ready to the 101 accepted."""
        return self._span(self.secured, self.upgraded)

    @property
    def first_message(self) -> float:
        """From the upgrade to the expected message: the send, then the wait."""
        return self._span(self.upgraded, self.matched)


@dataclass(frozen=True, slots=True)
class WsResponse:
    """A successful exchange: the upgrade's status (101), the subprotocol the server chose,
    the message that matched (None without `expect`) and how many messages were read."""

    status: int
    protocol: str | None
    message: str | None
    messages: int
    tls: TlsSession | None
    timeline: Timeline


class WsError(NetFailure[Timeline]):
    """An exchange that failed (`failures.NetFailure`); the message never holds a message's
    content either."""


class InvalidRequest(WsError):
    """Not a ws:// or wss:// URL with a host, or a wss:// one without an SSL context."""


class ResolveFailed(WsError, failures.ResolveFailed[Timeline]):
    pass


class NetworkError(WsError, failures.NetworkError[Timeline]):
    pass


class ConnectRefused(NetworkError, failures.ConnectRefused[Timeline]):
    pass


class ConnectFailed(NetworkError, failures.ConnectFailed[Timeline]):
    """The TCP connection could not be made, or broke during the upgrade."""


class TlsFailed(WsError, failures.TlsFailed[Timeline]):
    pass


class HandshakeRefused(WsError):
    """The server answered the upgrade with `status` instead of 101 Switching Protocols."""

    def __init__(self, status: int, timeline: Timeline | None = None) -> None:
        super().__init__(f"the upgrade was refused with status {status}", timeline)
        self.status = status


class ProtocolError(WsError):
    """A 101 that is not a valid WebSocket upgrade, a bad frame, or a message too long."""


class Closed(WsError):
    """The server closed the WebSocket (`code` from its close frame; None when it dropped
    the connection without one) before the expected message."""

    def __init__(self, code: int | None, message: str, timeline: Timeline | None = None) -> None:
        super().__init__(message, timeline)
        self.code = code


class DeadlineReached(WsError, failures.DeadlineReached[Timeline]):
    pass


class MessageTimeout(WsError):
    """`within` passed after the upgrade without any message."""

    def __init__(self, messages: int, message: str, timeline: Timeline | None = None) -> None:
        super().__init__(message, timeline)
        self.messages = messages


class NoMatchingMessage(MessageTimeout):
    """`within` passed after the upgrade; messages came, but none matched `expect`."""

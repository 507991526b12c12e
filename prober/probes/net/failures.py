"""The failures every net/ client shares: the base that carries the timeline, and the family
the shared dial (`dial.py`) raises.

Each client keeps an error family of its own (`H1Error`, `GrpcError`, `WsError`), so its
callers catch one base and read its own attributes (a response's head, a gRPC status); its
dial failures subclass both its base and the shared class here, and `Failures` tells the
dial which classes to raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prober.probes.net.stamps import DialTimeline

TimelineT = TypeVar("TimelineT", bound=DialTimeline[Any])


class NetFailure(Exception, Generic[TimelineT]):
    """An exchange that failed. The message never holds a URL's userinfo or query, nor a
    header or metadata value; `timeline` (None before any I/O) shows how far it got."""

    def __init__(self, message: str, timeline: TimelineT | None = None) -> None:
        super().__init__(message)
        self.timeline = timeline

    @property
    def phase(self) -> str | None:
        """Where it failed: the phase in progress, None when nothing was sent."""
        return self.timeline.phase if self.timeline is not None else None


class ResolveFailed(NetFailure[TimelineT]):
    """The host has no address of the asked family (or resolution itself failed)."""


class NetworkError(NetFailure[TimelineT]):
    """The connection failed below the protocol; the OSError, if any, is the `__cause__`."""


class ConnectRefused(NetworkError[TimelineT]):
    """Every address refused the connection."""


class ConnectFailed(NetworkError[TimelineT]):
    """The TCP connection could not be made (unreachable, no route, out of descriptors)."""


class TlsFailed(NetFailure[TimelineT]):
    """The TLS handshake failed; `error` is what `ssl` (or the socket) raised, for tls_reason."""

    def __init__(self, message: str, error: OSError, timeline: TimelineT | None = None) -> None:
        super().__init__(message, timeline)
        self.error = error


class DeadlineReached(NetFailure[TimelineT]):
    """The deadline passed; `phase` says where the exchange hung."""


@dataclass(frozen=True, slots=True)
class Failures:
    """A client's own classes for what the dial raises, and how it words a refusal
    (`{where}` is host:port, `{error}` the OSError's text)."""

    resolve_failed: type[ResolveFailed[Any]]
    refused: type[ConnectRefused[Any]]
    connect_failed: type[ConnectFailed[Any]]
    tls_failed: type[TlsFailed[Any]]
    refusal: str = "connection refused by {where}"

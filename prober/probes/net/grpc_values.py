"""What the gRPC health client takes and gives: a request, a response, its timeline, errors.

Plain frozen values with no I/O, as h1_values is for HTTP/1.1. Every error names the phase
it happened in and the gRPC status code blackbox_exporter would report for it
(`probe_grpc_status_code`), so a probe maps both without knowing how the bytes moved.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Literal

from prober.probes.net.grpc_wire import GrpcStatus, ServingStatus
from prober.probes.net.h1_values import TlsSession

Phase = Literal["resolve", "connect", "tls", "check"]

# The stamps of a Timeline in the order a call passes them, each with the phase ending there.
_STAMPS: tuple[tuple[str, Phase], ...] = (
    ("resolved", "resolve"),
    ("connected", "connect"),
    ("secured", "tls"),
    ("answered", "check"),
)


@dataclass(frozen=True, slots=True)
class HealthRequest:
    """One `grpc.health.v1.Health/Check` call to `host:port` over a fresh connection.

    `ssl_context` (see `grpc_health.grpc_context`) makes it TLS; `server_hostname` (SNI and
    the name the certificate must match) defaults to `host`, and so does the `:authority`.
    `metadata` pairs are sent as request headers (lower-case ASCII names; `-bin` names are
    not supported). `family` picks the addresses tried; `user_agent` is sent as gRPC's
    `user-agent`.
    """

    host: str
    port: int
    service: str = ""
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    family: socket.AddressFamily = socket.AF_UNSPEC
    user_agent: str = "prober/0.1"


@dataclass(frozen=True, slots=True)
class Timeline:
    """perf_counter stamps of one call, taken in the transport callbacks; 0.0 = not reached.

    `secured` is when the connection was ready for HTTP/2 (the handshake's end with TLS, the
    TCP connect without), so without TLS the tls phase is 0. `ended` is when the call ended,
    with its answer or its failure: the phase in progress then runs up to it.
    """

    started: float
    resolved: float = 0.0
    connected: float = 0.0
    secured: float = 0.0
    answered: float = 0.0
    ended: float = 0.0

    @property
    def phase(self) -> Phase:
        """The phase the call was in when it ended (check when it completed)."""
        for stamp, phase in _STAMPS:
            if not getattr(self, stamp):
                return phase
        return "check"

    def _span(self, begin: float, end: float) -> float:
        end = end or self.ended
        if not begin or not end:
            return 0.0
        return max(end - begin, 0.0)

    @property
    def resolve(self) -> float:
        return self._span(self.started, self.resolved)

    @property
    def connect(self) -> float:
        return self._span(self.resolved, self.connected)

    @property
    def tls(self) -> float:
        return self._span(self.connected, self.secured)

    @property
    def check(self) -> float:
        """From the connection ready to the call's end: HTTP/2 setup, request and answer.

        blackbox_exporter's `check` phase is connect + tls + this one.
        """
        return self._span(self.secured, self.answered)


@dataclass(frozen=True, slots=True)
class HealthResponse:
    """A Check call that returned OK: the serving status as sent (an int, since proto3 enums
    are open) and what the TLS handshake showed."""

    serving_status: int
    tls: TlsSession | None
    timeline: Timeline
    grpc_status: GrpcStatus = GrpcStatus.OK

    @property
    def status_name(self) -> str:
        """`SERVING`, `NOT_SERVING`, ...; a value the protocol does not define reads UNKNOWN."""
        try:
            return ServingStatus(self.serving_status).name
        except ValueError:
            return ServingStatus.UNKNOWN.name

    @property
    def serving(self) -> bool:
        """Success as blackbox_exporter judges it: the call returned OK and says SERVING."""
        return self.serving_status == ServingStatus.SERVING


class GrpcError(Exception):
    """A health check call that failed. The message never holds metadata values; `timeline`
    (None before any I/O) shows how far it got; `grpc_status` is the code to report."""

    grpc_status = GrpcStatus.UNAVAILABLE

    def __init__(self, message: str, timeline: Timeline | None = None) -> None:
        super().__init__(message)
        self.timeline = timeline

    @property
    def phase(self) -> Phase | None:
        """Where it failed: the phase in progress, None when nothing was sent."""
        return self.timeline.phase if self.timeline is not None else None


class InvalidRequest(GrpcError):
    """The call cannot be made as given (no host, a port out of range, a bad metadata name)."""

    grpc_status = GrpcStatus.INVALID_ARGUMENT


class ResolveFailed(GrpcError):
    """The host has no address of the asked family (or resolution itself failed)."""


class NetworkError(GrpcError):
    """The connection failed below gRPC; the OSError, if any, is the `__cause__`."""


class ConnectRefused(NetworkError):
    """Every address refused the connection."""


class ConnectFailed(NetworkError):
    """The TCP connection could not be made (unreachable, no route, out of descriptors)."""


class PeerClosed(NetworkError):
    """The server reset or closed the connection (or sent GOAWAY) before the call ended."""


class TlsFailed(GrpcError):
    """The TLS handshake failed; `error` is what `ssl` (or the socket) raised, for tls_reason."""

    def __init__(self, message: str, error: OSError, timeline: Timeline | None = None) -> None:
        super().__init__(message, timeline)
        self.error = error


class DeadlineReached(GrpcError):
    """The deadline passed (or the server said DEADLINE_EXCEEDED); `phase` says where."""

    grpc_status = GrpcStatus.DEADLINE_EXCEEDED


class ProtocolError(GrpcError):
    """The server does not speak gRPC over HTTP/2 as it should (no HTTP/2, a bad frame, a
    response that is not a gRPC one, a message that does not decode)."""

    grpc_status = GrpcStatus.INTERNAL


class CallFailed(GrpcError):
    """The call ended with a non-OK gRPC status; the server's own message is kept, cut short."""

    def __init__(self, status: GrpcStatus, message: str, timeline: Timeline | None = None) -> None:
        super().__init__(message, timeline)
        self.grpc_status = status


class ServiceNotFound(CallFailed):
    """NOT_FOUND: the server has a health service but does not know the service asked for."""


class Unimplemented(CallFailed):
    """UNIMPLEMENTED: the server has no health service."""

"""What the gRPC health client takes and gives: a request, a response, its timeline, errors.

Plain frozen values with no I/O, as h1_values is for HTTP/1.1. Every error names the phase
it happened in and the gRPC status code blackbox_exporter would report for it
(`probe_grpc_status_code`), so a probe maps both without knowing how the bytes moved.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import ClassVar, Literal

from prober.probes.net import failures
from prober.probes.net.failures import NetFailure
from prober.probes.net.grpc_wire import GrpcStatus, ServingStatus
from prober.probes.net.h1_values import TlsSession
from prober.probes.net.stamps import DIAL_STAMPS, DialTimeline

Phase = Literal["resolve", "connect", "tls", "check"]


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
class Timeline(DialTimeline[Phase]):
    """The dial's stamps (`stamps.DialTimeline`), then the answer: `ended` is when the call
    ended, with its answer or its failure."""

    STAMPS: ClassVar[tuple[tuple[str, Phase], ...]] = (
        *DIAL_STAMPS,
        ("answered", "check"),
    )
    COMPLETED: ClassVar[Phase] = "check"

    answered: float = 0.0

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


class GrpcError(NetFailure[Timeline]):
    """A health check call that failed (`failures.NetFailure`); `grpc_status` is the code
    to report."""

    grpc_status = GrpcStatus.UNAVAILABLE


class InvalidRequest(GrpcError):
    """The call cannot be made as given (no host, a port out of range, a bad metadata name)."""

    grpc_status = GrpcStatus.INVALID_ARGUMENT


class ResolveFailed(GrpcError, failures.ResolveFailed[Timeline]):
    pass


class NetworkError(GrpcError, failures.NetworkError[Timeline]):
    pass


class ConnectRefused(NetworkError, failures.ConnectRefused[Timeline]):
    pass


class ConnectFailed(NetworkError, failures.ConnectFailed[Timeline]):
    pass


class PeerClosed(NetworkError):
    """The server reset or closed the connection (or sent GOAWAY) before the call ended."""


class TlsFailed(GrpcError, failures.TlsFailed[Timeline]):
    pass


class DeadlineReached(GrpcError, failures.DeadlineReached[Timeline]):
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


FAILURES = failures.Failures(ResolveFailed, ConnectRefused, ConnectFailed, TlsFailed)

"""A standalone gRPC health check: one `grpc.health.v1.Health/Check` call over a fresh
HTTP/2 connection, on asyncio + h2 (`grpc_call.UnaryCall`).

As h1.py does for HTTP/1.1, it resolves and connects through the shared dial (`dial.dial`:
`loop.getaddrinfo`, IP literals skip it, each address in turn), and times every phase in
the transport callbacks: resolve, connect, tls (the handshake's own stamps,
`tls.TimedSSLObject`) and check (HTTP/2 setup, request, answer). The `:authority` and the
TLS server name are the host asked for, whichever address answered. The deadline is
enforced here (and sent as `grpc-timeout`), so a timeout says where it hung. Failures are
`GrpcError`s that name their phase and the gRPC status code to report; the caller maps
them to Reasons.
"""

from __future__ import annotations

import asyncio
import re
import ssl

from prober.config.model import TlsOptions
from prober.probes.net.dial import Endpoint, dial
from prober.probes.net.grpc_call import UnaryCall
from prober.probes.net.grpc_values import (
    FAILURES,
    CallFailed,
    ConnectFailed,
    ConnectRefused,
    DeadlineReached,
    GrpcError,
    HealthRequest,
    HealthResponse,
    InvalidRequest,
    NetworkError,
    PeerClosed,
    Phase,
    ProtocolError,
    ResolveFailed,
    ServiceNotFound,
    Timeline,
    TlsFailed,
    Unimplemented,
)
from prober.probes.net.grpc_wire import (
    HEALTH_CHECK_PATH,
    GrpcStatus,
    ServingStatus,
    WireError,
    decode_response,
    encode_request,
    frame,
)
from prober.probes.net.tls import build_context

__all__ = [
    "CallFailed",
    "ConnectFailed",
    "ConnectRefused",
    "DeadlineReached",
    "GrpcError",
    "GrpcStatus",
    "HealthRequest",
    "HealthResponse",
    "InvalidRequest",
    "NetworkError",
    "PeerClosed",
    "Phase",
    "ProtocolError",
    "ResolveFailed",
    "ServiceNotFound",
    "ServingStatus",
    "Timeline",
    "TlsFailed",
    "Unimplemented",
    "check_health",
    "grpc_context",
]

# Custom metadata: lower-case names (HTTP/2 wants them so), not gRPC's or HTTP/2's own.
_METADATA_NAME = re.compile(r"[0-9a-z_.\-]+")
_RESERVED = frozenset({"content-type", "te", "user-agent", "host", "connection"})
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
# grpc-timeout takes at most 8 digits: milliseconds up to ~27 hours, then whole seconds.
_MAX_TIMEOUT_DIGITS = 99_999_999


def grpc_context(options: TlsOptions) -> ssl.SSLContext:
    """A client context for gRPC: `tls.build_context` offering ALPN h2, as gRPC servers need
    (grpc-go refuses TLS clients without it). Reads the CA and key files: call it off the
    loop, and keep it apart from the http checks' contexts (ALPN is per context)."""
    context = build_context(options)
    context.set_alpn_protocols(["h2"])
    return context


async def check_health(request: HealthRequest, deadline: float) -> HealthResponse:
    """Ask `request.host` whether `request.service` is serving; the answer by `deadline`
    (loop time). Any OK answer is returned, SERVING or not (`HealthResponse.serving`).

    Raises a GrpcError subclass for every failure of the target; anything else is a bug.
    """
    host = _ascii_host(request.host)
    _check_port(request.port)
    loop = asyncio.get_running_loop()
    headers = _request_headers(request, host, deadline - loop.time())
    message = frame(encode_request(request.service))
    tls = request.ssl_context is not None
    call = UnaryCall(headers, message, loop.create_future(), tls)
    endpoint = Endpoint(
        host, request.port, request.family, request.ssl_context, request.server_hostname
    )
    try:
        async with asyncio.timeout_at(deadline):
            await dial(loop, call, endpoint, FAILURES)
            await call.done
    except TimeoutError:
        timeline = call.timeline()
        raise DeadlineReached(f"deadline reached in {timeline.phase}", timeline) from None
    except GrpcError as exc:
        if exc.timeline is None:
            exc.timeline = call.timeline()
        raise
    finally:
        call.abort()
    try:
        status = decode_response(call.answer)
    except WireError as exc:
        raise ProtocolError(f"invalid HealthCheckResponse: {exc}", call.timeline()) from None
    return HealthResponse(status, call.session, call.timeline())


def _ascii_host(host: str) -> str:
    """The host without brackets, IDNA-encoded; InvalidRequest when there is none."""
    host = host.strip().removeprefix("[").removesuffix("]")
    if not host:
        raise InvalidRequest("no host to call")
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidRequest("the host is not a valid name") from None


def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise InvalidRequest("the port is not a number from 1 to 65535")


def _request_headers(request: HealthRequest, host: str, timeout_s: float) -> list[tuple[str, str]]:
    """The HEADERS of the call: pseudo-headers, gRPC's own, then the caller's metadata."""
    shown = f"[{host}]" if ":" in host else host
    headers = [
        (":method", "POST"),
        (":scheme", "https" if request.ssl_context is not None else "http"),
        (":path", HEALTH_CHECK_PATH),
        (":authority", f"{shown}:{request.port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", request.user_agent),
        ("grpc-timeout", _grpc_timeout(timeout_s)),
    ]
    for name, value in request.metadata:
        if not _METADATA_NAME.fullmatch(name) or name.endswith("-bin"):
            raise InvalidRequest(
                "a metadata name must be lower-case letters, digits, '-', '_' or '.'"
                " (binary '-bin' metadata is not supported)"
            )
        if name.startswith("grpc-") or name in _RESERVED:
            raise InvalidRequest(f"metadata {name} is gRPC's or HTTP/2's own")
        if not _PRINTABLE_ASCII.fullmatch(value):
            raise InvalidRequest(f"the value of metadata {name} is not printable ASCII")
        headers.append((name, value))
    return headers


def _grpc_timeout(seconds: float) -> str:
    """The deadline as gRPC's `grpc-timeout`: whole milliseconds, at least 1."""
    millis = max(1, int(seconds * 1000))
    if millis <= _MAX_TIMEOUT_DIGITS:
        return f"{millis}m"
    return f"{min(millis // 1000, _MAX_TIMEOUT_DIGITS)}S"

"""The simulated platform's gRPC health service, `grpc.health.v1.Health/Check`, on grpclib.

Services: "" (the whole platform, which follows the `api` component, as `GET /api/v1/health`
does) and one per component (`api`, `login`, `timeline`, `notifications`); any other is
NOT_FOUND. Each call draws its component's faults as an HTTP request does: for the account
whose bearer token is in its `authorization` metadata (a missing or unknown token is not
refused: the call is anonymous, and an account-scoped fault spares it). The latency is
waited, `hang` never answers, `reset` fails the call with UNAVAILABLE, and an error status
of 500 or more answers NOT_SERVING (a 4xx leaves the service SERVING: it is
up, refusing clients). Body faults do not apply. Watch is UNIMPLEMENTED. Stopping answers
the calls in progress, hung ones too, with UNAVAILABLE.

The messages are read and written by `prober.probes.net.grpc_wire`, through a codec that
hands grpclib the bytes as they are, so no protobuf runtime is needed; grpclib is an
implementation apart from the probe's own client, which the tests play against it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from grpclib.const import Cardinality, Handler, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from prober.probes.net.grpc_wire import (
    HEALTH_CHECK_PATH,
    ServingStatus,
    WireError,
    decode_request,
    encode_response,
)
from prober.sim.faults import PLATFORM_COMPONENTS, Component, Outcome, pause
from prober.sim.state import SimState

SERVICES: dict[str, Component] = {"": Component.API, **{c.value: c for c in PLATFORM_COMPONENTS}}
WATCH_PATH = "/grpc.health.v1.Health/Watch"
_NOT_SERVING_FROM = 500
# How long a stop waits for the calls in progress to be answered.
_DRAIN_S = 2.0


class BytesCodec(CodecBase):
    """Messages are bytes already (grpc_wire made them): no protobuf in between."""

    @property
    def __content_subtype__(self) -> str:
        return "proto"  # so the content-type is plain `application/grpc`

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


class HealthService:
    """The Health service's Check method over one platform's faults and stats.

    It keeps its calls in progress, so that `drain` can answer every one of them (a hung
    call too) before the server stops: grpclib's own close cancels them without a word,
    leaving their clients to wait for their deadlines.
    """

    def __init__(self, state: SimState) -> None:
        self._state = state
        self._stopping = asyncio.Event()
        self._calls: set[asyncio.Task[Any]] = set()

    def __mapping__(self) -> dict[str, Handler]:
        """grpclib's servicer interface: method path -> handler."""
        return {
            HEALTH_CHECK_PATH: Handler(self.check, Cardinality.UNARY_UNARY, bytes, bytes),
            WATCH_PATH: Handler(self.watch, Cardinality.UNARY_STREAM, bytes, bytes),
        }

    async def check(self, stream: Stream[bytes, bytes]) -> None:
        """Answer one Check (while `drain` has not begun)."""
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            await self._answer(stream)
        finally:
            self._calls.discard(task)

    async def watch(self, stream: Stream[bytes, bytes]) -> None:
        """Watch is not served; said here rather than by grpclib, whose own UNIMPLEMENTED
        answer has no content-type (which grpclib's client, for one, refuses)."""
        raise GRPCError(Status.UNIMPLEMENTED, "Watch is not served by the simulated platform")

    async def drain(self, within: float) -> None:
        """Answer the calls in progress with UNAVAILABLE, waiting at most `within` seconds."""
        self._stopping.set()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=within)

    async def _answer(self, stream: Stream[bytes, bytes]) -> None:
        """NOT_FOUND for an unknown service, else its serving status."""
        try:
            service = decode_request(await stream.recv_message() or b"")
        except WireError:
            raise GRPCError(Status.INVALID_ARGUMENT, "not a HealthCheckRequest") from None
        component = SERVICES.get(service)
        if component is None:
            raise GRPCError(Status.NOT_FOUND, "unknown service")
        account = self._state.tokens.peek(_authorization(stream))
        status = await serving_status(self._state, component, self._stopping, account)
        await stream.send_message(encode_response(status))


def _authorization(stream: Stream[bytes, bytes]) -> str | None:
    """The call's `authorization` metadata (`Bearer TOKEN`), if any."""
    value = stream.metadata.get("authorization") if stream.metadata is not None else None
    return value if isinstance(value, str) else None


async def serving_status(
    state: SimState, component: Component, stopping: asyncio.Event, account: str | None = None
) -> ServingStatus:
    """What `component` says of itself now to `account` (None: anonymous), after its
    latency; its faults decide."""
    plan = state.faults.plan(component, state.rng, account)
    failure = plan.failure
    if failure is Outcome.ERROR_STATUS and plan.status < _NOT_SERVING_FROM:
        failure = None
    state.stats.count(component, failure or Outcome.OK, account if state.knows(account) else None)
    delay = state.base_delay_s() + plan.delay_s
    if delay > 0 and await pause(delay, stopping):
        raise GRPCError(Status.UNAVAILABLE, "the platform is shutting down")
    if failure is Outcome.HANG:
        await stopping.wait()  # or until the client gives up (the call is cancelled)
        raise GRPCError(Status.UNAVAILABLE, "the platform is shutting down")
    if failure is Outcome.RESET:
        raise GRPCError(Status.UNAVAILABLE, "injected fault: connection reset")
    if failure is Outcome.ERROR_STATUS:
        return ServingStatus.NOT_SERVING
    return ServingStatus.SERVING


@dataclass(frozen=True, slots=True)
class RunningGrpc:
    """The health service listening on a real socket."""

    host: str
    port: int
    _server: Server
    _service: HealthService

    @property
    def address(self) -> str:
        """`HOST:PORT` (IPv6 hosts in brackets), as a grpc check's target."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def stop(self) -> None:
        """Answer the calls in progress (UNAVAILABLE), then stop listening."""
        await self._service.drain(_DRAIN_S)
        self._server.close()
        await self._server.wait_closed()


async def start_grpc_health(
    state: SimState, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
) -> RunningGrpc:
    """Serve the health service of `state`'s platform on host:port (0 picks a free port).

    `tls` is a server context; it should offer ALPN h2, as gRPC clients expect.
    """
    sock = _listening_socket(host, port)
    service = HealthService(state)
    server = Server([service], codec=BytesCodec())
    try:
        await server.start(sock=sock, ssl=tls)
    except BaseException:
        sock.close()
        raise
    return RunningGrpc(host, int(sock.getsockname()[1]), server, service)


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket, so the port is known before serving.

    Made with proto IPPROTO_TCP (not `socket.create_server`'s 0): grpclib and asyncio set
    TCP_NODELAY only on such sockets, and without it every answer waits ~40 ms for a
    delayed ACK between its HEADERS and its DATA.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(100)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock

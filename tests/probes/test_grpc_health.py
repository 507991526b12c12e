"""The gRPC health client (`prober.probes.net.grpc_health`) against real loopback servers.

The simulated platform's health service (grpclib, an implementation apart from the
client's own h2 code) for the answers and the faults, bare grpclib servers for a server
without the health service and for what a server sees, raw asyncio servers for the ones
that do not speak HTTP/2 or TLS; TLS with certificates made in the test.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
import uvloop
from grpclib.const import Cardinality, Handler
from grpclib.server import Server, Stream
from hypothesis import given
from hypothesis import strategies as st

from prober.config.model import TlsOptions
from prober.probes.net.grpc_health import (
    ConnectRefused,
    DeadlineReached,
    GrpcError,
    GrpcStatus,
    HealthRequest,
    HealthResponse,
    InvalidRequest,
    PeerClosed,
    ProtocolError,
    ResolveFailed,
    ServiceNotFound,
    TlsFailed,
    Unimplemented,
    check_health,
    grpc_context,
)
from prober.probes.net.grpc_wire import (
    HEALTH_CHECK_PATH,
    MessageReader,
    ServingStatus,
    WireError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    frame,
)
from prober.probes.net.tls import tls_reason
from prober.result import Reason
from prober.sim import RunningSim, SimOptions, start_sim
from prober.sim.grpc import BytesCodec, start_grpc_health
from prober.sim.state import SIM_STATE
from tests.support.certs import CertFactory
from tests.support.servers import free_port

FAST = SimOptions(latency_ms=0, latency_jitter_ms=0, seed=3)
HANG = 0.5  # the deadline of calls that are meant to hang


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    running = await start_sim(options=FAST, grpc_listen=("127.0.0.1", 0))
    yield running
    await running.stop()


@pytest.fixture
def trusted(certs: CertFactory) -> ssl.SSLContext:
    return grpc_context(TlsOptions(ca_file=str(certs.ca_file)))


def h2_server_context(certs: CertFactory, **issue: Any) -> ssl.SSLContext:
    context = certs.issue(**issue).server_context()
    context.set_alpn_protocols(["h2"])
    return context


def port_of(sim: RunningSim) -> int:
    assert sim.grpc is not None
    return sim.grpc.port


async def check(port: int, service: str = "", within: float = 5.0, **fields: Any) -> HealthResponse:
    request = HealthRequest(fields.pop("host", "127.0.0.1"), port, service, **fields)
    return await check_health(request, asyncio.get_running_loop().time() + within)


async def failure(port: int, service: str = "", within: float = 5.0, **fields: Any) -> GrpcError:
    with pytest.raises(GrpcError) as raised:
        await check(port, service, within, **fields)
    error = raised.value
    assert len(str(error)) < 300
    return error


async def put_fault(sim: RunningSim, component: str, fault: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.put(f"{sim.url}/-/faults/{component}", json=fault) as resp,
    ):
        assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("service", ["", "api", "login", "timeline", "notifications"])
async def test_every_platform_service_is_serving(sim: RunningSim, service: str) -> None:
    response = await check(port_of(sim), service)
    assert response.serving
    assert response.status_name == "SERVING"
    assert response.grpc_status is GrpcStatus.OK
    assert response.tls is None
    timeline = response.timeline
    assert timeline.phase == "check"
    assert timeline.resolve == 0.0  # an IP literal: nothing to resolve
    assert timeline.connect > 0 and timeline.check > 0 and timeline.tls == 0.0


async def test_a_name_is_resolved_in_its_own_phase(sim: RunningSim) -> None:
    response = await check(port_of(sim), host="localhost", family=socket.AF_INET)
    assert response.serving
    assert response.timeline.resolve > 0


async def test_component_fault_makes_its_service_not_serving(sim: RunningSim) -> None:
    await put_fault(sim, "login", {"status": 503})
    response = await check(port_of(sim), "login")
    assert not response.serving
    assert response.status_name == "NOT_SERVING"
    assert response.grpc_status is GrpcStatus.OK  # the call itself worked
    assert (await check(port_of(sim), "")).serving  # "" follows api, which is fine


async def test_unknown_service_is_not_found(sim: RunningSim) -> None:
    error = await failure(port_of(sim), "billing")
    assert isinstance(error, ServiceNotFound)
    assert error.grpc_status is GrpcStatus.NOT_FOUND
    assert error.phase == "check"
    assert "unknown service" in str(error)


async def test_hung_service_reaches_the_deadline_in_check(sim: RunningSim) -> None:
    await put_fault(sim, "timeline", {"hang": True})
    error = await failure(port_of(sim), "timeline", within=HANG)
    assert isinstance(error, DeadlineReached)
    assert error.phase == "check"
    assert error.grpc_status is GrpcStatus.DEADLINE_EXCEEDED
    assert str(error) == "deadline reached in check"


async def test_refused_port_fails_in_connect() -> None:
    error = await failure(free_port())
    assert isinstance(error, ConnectRefused)
    assert error.phase == "connect"
    assert error.grpc_status is GrpcStatus.UNAVAILABLE


async def test_http1_server_is_a_protocol_error(sim: RunningSim) -> None:
    error = await failure(sim.port)  # the sim's HTTP/1.1 API port
    assert isinstance(error, ProtocolError)
    assert "HTTP/1.x" in str(error)
    assert error.phase == "check"


async def test_server_without_health_service_is_unimplemented() -> None:
    server = Server([])
    port = await _serve(server)
    try:
        error = await failure(port)
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(error, Unimplemented)
    assert error.grpc_status is GrpcStatus.UNIMPLEMENTED


class _Recorder:
    """A health service that answers SERVING and keeps what each call carried."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __mapping__(self) -> dict[str, Handler]:
        return {HEALTH_CHECK_PATH: Handler(self.check, Cardinality.UNARY_UNARY, bytes, bytes)}

    async def check(self, stream: Stream[bytes, bytes]) -> None:
        request = await stream.recv_message()
        deadline = stream.deadline
        self.calls.append(
            {
                "service": decode_request(request or b""),
                "metadata": dict(stream.metadata or {}),
                "user_agent": stream.user_agent,
                "remaining": deadline.time_remaining() if deadline is not None else None,
            }
        )
        await stream.send_message(encode_response(ServingStatus.SERVING))


async def test_service_metadata_and_deadline_reach_the_server() -> None:
    recorder = _Recorder()
    server = Server([recorder], codec=BytesCodec())
    port = await _serve(server)
    try:
        metadata = (("x-team", "sre"), ("x-probe", "canary"))
        assert (await check(port, "orders.v1", within=3.0, metadata=metadata)).serving
    finally:
        server.close()
        await server.wait_closed()
    (call,) = recorder.calls
    assert call["service"] == "orders.v1"
    assert call["metadata"]["x-team"] == "sre"
    assert call["metadata"]["x-probe"] == "canary"
    assert call["user_agent"] == "prober/0.1"
    assert 0 < call["remaining"] <= 3.0  # grpc-timeout carried the deadline


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"metadata": (("X-Upper", "v"),)}, "lower-case"),
        ({"metadata": (("x-key-bin", "v"),)}, "binary"),
        ({"metadata": (("grpc-timeout", "1S"),)}, "gRPC's or HTTP/2's own"),
        ({"metadata": (("x-key", "line\nbreak"),)}, "not printable ASCII"),
        ({"host": ""}, "no host"),
    ],
    ids=["upper-case", "binary", "reserved", "line-break", "no-host"],
)
async def test_bad_request_is_refused_before_any_io(fields: dict[str, Any], message: str) -> None:
    error = await failure(free_port(), **fields)
    assert isinstance(error, InvalidRequest)
    assert message in str(error)
    assert "line\nbreak" not in str(error)  # a metadata value never shows


async def test_port_out_of_range_is_refused() -> None:
    error = await failure(70000)
    assert isinstance(error, InvalidRequest)


async def test_ip_literal_of_the_other_family_fails_in_resolve() -> None:
    error = await failure(free_port(), host="127.0.0.1", family=socket.AF_INET6)
    assert isinstance(error, ResolveFailed)


async def test_tls_call_is_timed_and_shows_the_certificate(
    certs: CertFactory, trusted: ssl.SSLContext
) -> None:
    sim = await start_sim(
        options=FAST, grpc_listen=("127.0.0.1", 0), grpc_tls=h2_server_context(certs)
    )
    try:
        response = await check(port_of(sim), "api", ssl_context=trusted)
    finally:
        await sim.stop()
    assert response.serving
    assert response.tls is not None and response.tls.peer_certificate
    assert response.tls.version is not None and response.tls.version.startswith("TLS")
    assert response.timeline.tls > 0 and response.timeline.connect > 0


async def test_untrusted_certificate_fails_in_tls(certs: CertFactory) -> None:
    sim = await start_sim(
        options=FAST,
        grpc_listen=("127.0.0.1", 0),
        grpc_tls=h2_server_context(certs, self_signed=True),
    )
    try:
        error = await failure(port_of(sim), ssl_context=grpc_context(TlsOptions()))
    finally:
        await sim.stop()
    assert isinstance(error, TlsFailed)
    assert error.phase == "tls"
    assert tls_reason(error.error) == Reason.TLS_CERT_INVALID


async def test_plain_call_to_a_tls_server_fails(certs: CertFactory) -> None:
    sim = await start_sim(
        options=FAST, grpc_listen=("127.0.0.1", 0), grpc_tls=h2_server_context(certs)
    )
    try:
        error = await failure(port_of(sim))
    finally:
        await sim.stop()
    assert isinstance(error, PeerClosed | ProtocolError)
    assert error.phase == "check"


class _Silent(asyncio.Protocol):
    """Accepts a connection and never says a word."""

    def __init__(self, held: list[asyncio.Transport]) -> None:
        self._held = held

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._held.append(cast(asyncio.Transport, transport))


async def test_silent_server_reaches_the_deadline_in_the_phase_it_hung(
    trusted: ssl.SSLContext,
) -> None:
    held: list[asyncio.Transport] = []
    loop = asyncio.get_running_loop()
    silent = await loop.create_server(lambda: _Silent(held), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        in_tls = await failure(port, within=HANG, ssl_context=trusted)
        in_check = await failure(port, within=HANG)
    finally:
        silent.close()
        for transport in held:
            transport.abort()
        await silent.wait_closed()
    assert isinstance(in_tls, DeadlineReached) and in_tls.phase == "tls"
    assert isinstance(in_check, DeadlineReached) and in_check.phase == "check"


async def test_ipv6_loopback() -> None:
    sim = await start_sim(options=FAST)
    grpc = await start_grpc_health(sim.app[SIM_STATE], "::1", 0)
    try:
        response = await check(grpc.port, host="::1")
        assert grpc.address == f"[::1]:{grpc.port}"
    finally:
        await grpc.stop()
        await sim.stop()
    assert response.serving


def test_same_calls_under_uvloop(certs: CertFactory) -> None:
    async def calls() -> None:
        trusted = grpc_context(TlsOptions(ca_file=str(certs.ca_file)))
        sim = await start_sim(
            options=FAST, grpc_listen=("127.0.0.1", 0), grpc_tls=h2_server_context(certs)
        )
        try:
            response = await check(port_of(sim), "login", ssl_context=trusted)
            assert response.serving and response.timeline.tls > 0
            error = await failure(port_of(sim), "nope", ssl_context=trusted)
            assert isinstance(error, ServiceNotFound)
        finally:
            await sim.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(calls())


async def _serve(server: Server) -> int:
    """Start a bare grpclib server on a free loopback port; the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    await server.start(sock=sock)
    return int(sock.getsockname()[1])


# The messages, byte for byte (protobuf wire format, as the official runtime writes them).


@pytest.mark.parametrize(
    ("service", "wire"),
    [("", b""), ("api", b"\x0a\x03api"), ("x" * 200, b"\x0a\xc8\x01" + b"x" * 200)],
    ids=["whole-server", "short", "two-byte-length"],
)
def test_request_is_encoded_as_protobuf_does(service: str, wire: bytes) -> None:
    assert encode_request(service) == wire
    assert decode_request(wire) == service


@pytest.mark.parametrize(
    ("status", "wire"),
    [
        (ServingStatus.UNKNOWN, b""),
        (ServingStatus.SERVING, b"\x08\x01"),
        (ServingStatus.NOT_SERVING, b"\x08\x02"),
        (ServingStatus.SERVICE_UNKNOWN, b"\x08\x03"),
    ],
    ids=lambda value: getattr(value, "name", ""),
)
def test_response_is_encoded_as_protobuf_does(status: ServingStatus, wire: bytes) -> None:
    assert encode_response(status) == wire
    assert decode_response(wire) == status


def test_unknown_fields_are_skipped_and_the_last_status_wins() -> None:
    # field 2 varint, field 3 bytes, field 4 fixed32, field 5 fixed64, then status twice
    wire = b"\x10\x07\x1a\x02hi\x25abcd\x29abcdefgh\x08\x02\x08\x01"
    assert decode_response(wire) == ServingStatus.SERVING
    assert decode_response(b"\x08\x07") == 7  # an open enum keeps a value it does not name
    negative = b"\x08" + b"\xff" * 9 + b"\x01"
    assert decode_response(negative) == -1


@pytest.mark.parametrize(
    "wire",
    [b"\x08", b"\x0a\x05ab", b"\x08" + b"\xff" * 11, b"\x0b", b"\x00\x01", b"\x0a\x01\xff"],
    ids=["cut-varint", "cut-bytes", "long-varint", "group", "field-zero", "not-utf8"],
)
def test_malformed_messages_are_refused(wire: bytes) -> None:
    for decode in (decode_request, decode_response):
        with pytest.raises(WireError):
            decode(wire)


@given(st.text(max_size=300))
def test_any_service_name_round_trips(service: str) -> None:
    assert decode_request(encode_request(service)) == service


def test_message_reader_splits_frames_and_caps_its_buffer() -> None:
    reader = MessageReader(cap=64)
    stream = frame(b"\x08\x01") + frame(b"") + frame(b"abc")
    for index in range(len(stream)):
        reader.feed(stream[index : index + 1])
    assert reader.messages == [b"\x08\x01", b"", b"abc"]
    assert reader.pending == 0
    with pytest.raises(WireError, match="longer than 64"):
        reader.feed(frame(b"x" * 100))
    with pytest.raises(WireError, match="compressed"):
        MessageReader(cap=64).feed(b"\x01\x00\x00\x00\x00")

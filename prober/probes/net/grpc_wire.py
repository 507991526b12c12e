"""The gRPC health checking protocol's two messages and gRPC's message framing, by hand.

`grpc.health.v1.HealthCheckRequest` is `{string service = 1}` and `HealthCheckResponse` is
`{ServingStatus status = 1}`: one field each, a few bytes of protobuf wire format, so they
are written and read here rather than through the `protobuf` runtime and generated code.
The reader follows the wire format in full (unknown fields of every wire type are skipped,
the last value of a repeated scalar wins), so a server that adds fields still decodes.
Used by the probe's client (`grpc_call.py`) and by the simulated platform's server.
"""

from __future__ import annotations

from enum import IntEnum

HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"
# The 5-byte prefix of every gRPC message: a compressed flag, then a big-endian length.
PREFIX_BYTES = 5
_MAX_VARINT_BYTES = 10
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_FIXED_SIZES = {_FIXED64: 8, _FIXED32: 4}


class ServingStatus(IntEnum):
    """`HealthCheckResponse.ServingStatus`; SERVICE_UNKNOWN is meant for Watch only."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3


class GrpcStatus(IntEnum):
    """gRPC status codes (grpc/doc/statuscodes.md), as `probe_grpc_status_code` reports them."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class WireError(ValueError):
    """Bytes that are not a valid message of the expected type; the text says what is wrong."""


def _varint(value: int) -> bytes:
    """`value` (0 <= value < 2**64) as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint starting at `at` and the offset after it."""
    value = 0
    for index in range(_MAX_VARINT_BYTES):
        if at + index >= len(data):
            raise WireError("message ends inside a varint")
        byte = data[at + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, at + index + 1
    raise WireError("varint longer than 10 bytes")


def _fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """Every (field number, wire type, value) of a message; varints as ints, the rest as bytes."""
    fields: list[tuple[int, int, int | bytes]] = []
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, wire_type = key >> 3, key & 0x7
        if number == 0:
            raise WireError("field number 0")
        value: int | bytes
        if wire_type == _VARINT:
            value, at = _read_varint(data, at)
        elif wire_type == _LENGTH_DELIMITED:
            length, at = _read_varint(data, at)
            value, at = data[at : at + length], at + length
            if at > len(data):
                raise WireError("message ends inside a length-delimited field")
        elif wire_type in _FIXED_SIZES:
            value, at = data[at : at + _FIXED_SIZES[wire_type]], at + _FIXED_SIZES[wire_type]
            if at > len(data):
                raise WireError("message ends inside a fixed-size field")
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        fields.append((number, wire_type, value))
    return fields


def encode_request(service: str) -> bytes:
    """A HealthCheckRequest for `service` ("" asks about the whole server)."""
    if not service:
        return b""  # proto3 leaves a default value out
    raw = service.encode("utf-8")
    return bytes([1 << 3 | _LENGTH_DELIMITED]) + _varint(len(raw)) + raw


def decode_request(data: bytes) -> str:
    """The `service` of a HealthCheckRequest."""
    service = ""
    for number, wire_type, value in _fields(data):
        if number != 1:
            continue
        if wire_type != _LENGTH_DELIMITED or not isinstance(value, bytes):
            raise WireError("service is not a string")
        try:
            service = value.decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("service is not valid UTF-8") from None
    return service


def encode_response(status: ServingStatus) -> bytes:
    """A HealthCheckResponse with `status`."""
    if status is ServingStatus.UNKNOWN:
        return b""
    return bytes([1 << 3 | _VARINT]) + _varint(int(status))


def decode_response(data: bytes) -> int:
    """The `status` of a HealthCheckResponse, as sent: values beyond SERVICE_UNKNOWN are kept."""
    status = 0
    for number, wire_type, value in _fields(data):
        if number != 1:
            continue
        if wire_type != _VARINT or not isinstance(value, int):
            raise WireError("status is not an enum")
        # An enum is an int32 sent sign-extended to 64 bits.
        status = value - (1 << 64) if value >= 1 << 63 else value
    return status


def frame(message: bytes) -> bytes:
    """`message` as one uncompressed gRPC message: the 5-byte prefix, then the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


class MessageReader:
    """Splits a stream of DATA bytes into gRPC messages; at most `cap` bytes are buffered."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._buffer = bytearray()
        self.messages: list[bytes] = []

    def feed(self, data: bytes) -> None:
        """Add bytes; every message they complete is appended to `messages`."""
        self._buffer += data
        if len(self._buffer) > self._cap:
            raise WireError(f"response longer than {self._cap} bytes")
        while len(self._buffer) >= PREFIX_BYTES:
            if self._buffer[0] != 0:
                raise WireError("compressed message, though no compression was offered")
            length = int.from_bytes(self._buffer[1:PREFIX_BYTES], "big")
            end = PREFIX_BYTES + length
            if len(self._buffer) < end:
                return
            self.messages.append(bytes(self._buffer[PREFIX_BYTES:end]))
            del self._buffer[:end]

    @property
    def pending(self) -> int:
        """Bytes of a message begun but not finished (a stream must not end with any)."""
        return len(self._buffer)

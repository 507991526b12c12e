"""The faults injected into the simulated platform and how a fault is applied to one request.

A `FaultSpec` (fault_spec.py, re-exported here) says what is wrong with a component. The
`FaultTable` holds the current specs; for each request it draws a `Plan` (delay, failure, body
shape) from the component's own spec and the `all` spec, which act as two layers: `all` is a
load balancer in front of every component, the component's own spec is the service behind
it, and a request passes both. A spec with `accounts: F` is a pulled rack: it is a layer only
for requests of accounts whose shard share is below F, so the table needs the request's
account before it draws the plan.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from aiohttp import web

from prober.sim.accounts import shard_share
from prober.sim.fault_spec import (
    PLATFORM_COMPONENTS,
    PROPAGATING_COMPONENTS,
    Component,
    FaultError,
    FaultSpec,
    describe_validation_error,
    parse_component,
    parse_fault_args,
    parse_fault_spec,
    refuse_misplaced_fields,
)

__all__ = [
    "INJECTED_OUTCOMES",
    "PLATFORM_COMPONENTS",
    "PROPAGATING_COMPONENTS",
    "BodyFault",
    "Component",
    "FaultError",
    "FaultSpec",
    "FaultTable",
    "Outcome",
    "Plan",
    "describe_validation_error",
    "hang",
    "parse_component",
    "parse_fault_args",
    "parse_fault_spec",
    "pause",
    "plan_request",
    "refuse_misplaced_fields",
    "reset_connection",
    "send_body",
]

_CHUNK_BYTES = 64 * 1024
_DEFAULT_ERROR_STATUS = 500
_WRONG_CONTENT = (
    b'{"error":{"code":"over_capacity","message":"Something went wrong, but don\'t fret'
    b" - let's give it another shot.\"}}"
)


class Outcome(StrEnum):
    """What the platform did with one request, as counted by `GET /-/stats`."""

    OK = "ok"
    ERROR_STATUS = "error_status"
    UNAUTHORIZED = "unauthorized"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    HANG = "hang"
    RESET = "reset"
    MALFORMED = "malformed"
    WRONG_CONTENT = "wrong_content"
    HUGE_BODY = "huge_body"
    SLOW_BODY = "slow_body"


# What a fault did to a request; the other outcomes are the endpoint's own answers.
INJECTED_OUTCOMES = frozenset(
    {
        Outcome.ERROR_STATUS,
        Outcome.HANG,
        Outcome.RESET,
        Outcome.MALFORMED,
        Outcome.WRONG_CONTENT,
        Outcome.HUGE_BODY,
        Outcome.SLOW_BODY,
    }
)


@dataclass(frozen=True, slots=True)
class BodyFault:
    """How a successful response body is mangled (the component's own value wins over `all`)."""

    malformed: Literal["json", "truncated"] | None = None
    wrong_content: bool = False
    body_bytes: int | None = None
    bytes_per_s: int | None = None

    @property
    def outcome(self) -> Outcome:
        """The stats outcome of a response with this body, most visible fault first."""
        if self.malformed is not None:
            return Outcome.MALFORMED
        if self.wrong_content:
            return Outcome.WRONG_CONTENT
        if self.body_bytes is not None:
            return Outcome.HUGE_BODY
        if self.bytes_per_s is not None:
            return Outcome.SLOW_BODY
        return Outcome.OK


_CLEAN_BODY = BodyFault()


@dataclass(frozen=True, slots=True)
class Plan:
    """What the platform does with one request: wait, then fail, or answer with a body shape."""

    delay_s: float = 0.0
    failure: Outcome | None = None
    status: int = _DEFAULT_ERROR_STATUS
    body: BodyFault = _CLEAN_BODY


NO_FAULT = Plan()


def _own_or_shared(own: FaultSpec | None, shared: FaultSpec | None, name: str) -> Any:
    """A body field from the component's own spec when set there, else from `all`."""
    for spec in (own, shared):
        if spec is not None and getattr(spec, name) is not None:
            return getattr(spec, name)
    return None


def _draw_failure(layers: list[FaultSpec], rng: random.Random) -> tuple[Outcome, int] | None:
    """Hang, reset or an error status if any layer says so; each layer draws its rate apart."""
    if any(layer.hang for layer in layers):
        return Outcome.HANG, 0
    if any(layer.reset for layer in layers):
        return Outcome.RESET, 0
    for layer in layers:
        rate = layer.failure_rate()
        if rate >= 1.0 or (rate > 0.0 and rng.random() < rate):
            return Outcome.ERROR_STATUS, layer.status or _DEFAULT_ERROR_STATUS
    return None


def _draw_delay(layers: list[FaultSpec], rng: random.Random) -> float:
    """Layer latencies add up, and so do their jitters (uniform, never below the base)."""
    base = sum(layer.latency_ms or 0.0 for layer in layers)
    jitter = sum(layer.latency_jitter_ms or 0.0 for layer in layers)
    return (base + (rng.uniform(0.0, jitter) if jitter > 0 else 0.0)) / 1000.0


def plan_request(own: FaultSpec | None, shared: FaultSpec | None, rng: random.Random) -> Plan:
    """Draw what happens to one request of a component from its own spec and the `all` spec.

    Both apply as given: choosing the layers that hit the request's account is the table's job.
    """
    layers = [spec for spec in (shared, own) if spec is not None]
    if not layers:
        return NO_FAULT
    delay_s = _draw_delay(layers, rng)
    failure = _draw_failure(layers, rng)
    if failure is not None:
        return Plan(delay_s=delay_s, failure=failure[0], status=failure[1])
    body = BodyFault(
        malformed=_own_or_shared(own, shared, "malformed"),
        wrong_content=any(layer.wrong_content for layer in layers),
        body_bytes=_own_or_shared(own, shared, "body_bytes"),
        bytes_per_s=_own_or_shared(own, shared, "slow_body_bytes_per_s"),
    )
    return Plan(delay_s=delay_s, body=body)


class FaultTable:
    """The faults currently injected, per component, changed by the admin API and scenarios."""

    def __init__(self, faults: Mapping[str, FaultSpec] | None = None) -> None:
        self._specs: dict[Component, FaultSpec] = {}
        self.replace(faults or {})

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The current faults as JSON-ready dicts with unset fields left out."""
        return {c.value: spec.model_dump(exclude_defaults=True) for c, spec in self._specs.items()}

    def set(self, component: Component, spec: FaultSpec) -> None:
        """Replace one component's fault; an empty spec clears it."""
        if spec.is_empty():
            self._specs.pop(component, None)
        else:
            self._specs[component] = spec

    def clear(self, component: Component | None = None) -> None:
        """Clear one component's fault, or every fault."""
        if component is None:
            self._specs.clear()
        else:
            self._specs.pop(component, None)

    def replace(self, faults: Mapping[str, FaultSpec]) -> None:
        """Make `faults` the whole table, as a scenario phase does."""
        self._specs.clear()
        for name, spec in faults.items():
            self.set(parse_component(name), spec)

    def plan(self, component: Component, rng: random.Random, account: str | None = None) -> Plan:
        """Draw the plan for one request of `component` by `account` (None: anonymous)."""
        if not self._specs:
            return NO_FAULT  # cheap when nothing is injected
        own, shared = self._layers(component, account)
        return plan_request(own, shared, rng)

    def propagation_delay_s(self, component: Component, account: str) -> float:
        """How long a write by (or for) `account` takes to show in `component`; layers add."""
        if not self._specs:
            return 0.0
        layers = (spec for spec in self._layers(component, account) if spec is not None)
        return sum(spec.propagation_delay_ms or 0.0 for spec in layers) / 1000.0

    def _layers(
        self, component: Component, account: str | None
    ) -> tuple[FaultSpec | None, FaultSpec | None]:
        """The component's own spec and the `all` spec, each only if it hits `account`."""
        share = shard_share(account) if account is not None else None
        own, shared = self._specs.get(component), self._specs.get(Component.ALL)
        return (
            own if own is not None and own.hits(share) else None,
            shared if shared is not None and shared.hits(share) else None,
        )


async def pause(seconds: float, closing: asyncio.Event) -> bool:
    """Wait `seconds`, cut short when the sim shuts down; True if it is shutting down."""
    try:
        async with asyncio.timeout(seconds):
            await closing.wait()
    except TimeoutError:
        return False
    return True


def reset_connection(request: web.BaseRequest) -> None:
    """Drop the TCP connection with an RST (SO_LINGER 0), as a crashed proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def hang(request: web.BaseRequest, closing: asyncio.Event) -> web.StreamResponse:
    """Never answer: wait until the client gives up (the handler is cancelled) or shutdown."""
    await closing.wait()
    reset_connection(request)
    return web.Response(status=503)


def _padded_json(total: int) -> Iterator[bytes]:
    """A valid JSON object of exactly `total` bytes, generated chunk by chunk, never whole."""
    head, tail = b'{"padding":"', b'"}'
    filler = total - len(head) - len(tail)
    block = b"x" * _CHUNK_BYTES
    yield head
    while filler > 0:
        size = min(filler, _CHUNK_BYTES)
        yield block if size == _CHUNK_BYTES else block[:size]
        filler -= size
    yield tail


def _content(payload: bytes, body: BodyFault) -> tuple[int, Iterator[bytes]]:
    """The content of a successful answer and its length, before `malformed` cuts it."""
    if body.wrong_content:
        return len(_WRONG_CONTENT), iter((_WRONG_CONTENT,))
    if body.body_bytes is not None:
        return body.body_bytes, _padded_json(body.body_bytes)
    return len(payload), iter((payload,))


def _rechunk(chunks: Iterator[bytes], size: int, limit: int) -> Iterator[bytes]:
    """At most `limit` bytes of `chunks`, in pieces of at most `size` bytes."""
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), size):
            if limit <= 0:
                return
            piece = view[start : start + min(size, limit)]
            limit -= len(piece)
            yield bytes(piece)


async def _stream(
    resp: web.StreamResponse,
    pieces: Iterator[bytes],
    bytes_per_s: int | None,
    closing: asyncio.Event,
) -> bool:
    """Write pieces, paced to `bytes_per_s` by loop-clock deadlines; False if cut by shutdown."""
    loop = asyncio.get_running_loop()
    started, sent = loop.time(), 0
    for piece in pieces:
        await resp.write(piece)
        sent += len(piece)
        if bytes_per_s is not None:
            wait = started + sent / bytes_per_s - loop.time()
            if wait > 0 and await pause(wait, closing):
                return False
    return True


async def send_body(
    request: web.BaseRequest,
    payload: bytes,
    body: BodyFault,
    closing: asyncio.Event,
) -> web.StreamResponse:
    """Stream a 200 answer shaped by `body`: huge, slow, malformed, truncated or off-topic."""
    total, chunks = _content(payload, body)
    # Both malformed modes send half; `json` says so (invalid JSON), `truncated` promises all.
    limit = total // 2 if body.malformed else total
    truncated = body.malformed == "truncated"
    size = max(1, min(_CHUNK_BYTES, body.bytes_per_s // 10)) if body.bytes_per_s else _CHUNK_BYTES
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.content_length = total if truncated else limit
    try:
        await resp.prepare(request)
        complete = await _stream(resp, _rechunk(chunks, size, limit), body.bytes_per_s, closing)
        if truncated or not complete:
            # close() flushes what was written, then ends the connection short of Content-Length.
            if request.transport is not None:
                request.transport.close()
            return resp
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client gave up mid-body, which is what slow and huge bodies are for
    return resp

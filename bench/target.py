"""The benchmark's HTTP target: answers every request after a fixed delay.

A raw asyncio protocol rather than an aiohttp app, so that the target costs little CPU and
its own timing error stays small next to the probers' it is used to judge. It measures how
late it answers (its sleep's overshoot), so a report can show the target was not the
bottleneck. `GET /-/stats` returns and resets those figures as JSON; `/-/healthy` answers at
once.

Run: `python -m bench.target --port 0 --delay 0.05` prints `listening PORT` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    b"Connection: close\r\n\r\nok\n"
)
_MAX_SAMPLES = 200_000
_MAX_REQUEST = 16 * 1024


class TargetStats:
    """Answers given and how late each was, bounded in size; reset on every read."""

    def __init__(self) -> None:
        self.answered = 0
        self.late: list[float] = []

    def add(self, late: float) -> None:
        self.answered += 1
        if len(self.late) < _MAX_SAMPLES:
            self.late.append(late)

    def take(self) -> dict[str, float]:
        late = sorted(self.late)
        figures = {
            "answered": float(self.answered),
            "late_p50": _quantile(late, 0.5),
            "late_p99": _quantile(late, 0.99),
            "late_max": late[-1] if late else 0.0,
        }
        self.answered = 0
        self.late = []
        return figures


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class _Connection(asyncio.Protocol):
    def __init__(self, delay: float, stats: TargetStats) -> None:
        self.delay = delay
        self.stats = stats
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.answering = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.answering or self.transport is None:
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > _MAX_REQUEST:
                self.transport.close()
            return
        self.answering = True
        received = time.perf_counter()
        path = self.buffer.split(b" ", 2)[1] if self.buffer.count(b" ") >= 2 else b"/"
        if path.startswith(b"/-/"):
            self._answer_admin(path)
            return
        asyncio.get_running_loop().call_later(self.delay, self._answer, received)

    def _answer(self, received: float) -> None:
        late = time.perf_counter() - received - self.delay
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_RESPONSE)
            self.transport.close()
            self.stats.add(late)

    def _answer_admin(self, path: bytes) -> None:
        assert self.transport is not None
        body = b"OK\n"
        if path.startswith(b"/-/stats"):
            body = json.dumps(self.stats.take()).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        self.transport.write(head.encode() + body)
        self.transport.close()


async def serve(host: str, port: int, delay: float) -> None:
    """Listen until cancelled; print the bound port first."""
    stats = TargetStats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(delay, stats), host, port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"listening {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()
    # Plain asyncio on purpose: its timers never fire early, uvloop's can by up to a
    # millisecond, and an early answer would make both probers look more accurate.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.delay))


if __name__ == "__main__":
    main()

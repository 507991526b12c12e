"""A small HTTP/2 server over TLS on loopback, on the `h2` library (server side) and asyncio.

It offers ALPN ["h2", "http/1.1"]: a client that chooses h2 gets HTTP/2, any other gets a
minimal HTTP/1.1 answer from the same routes, so one server shows both sides of the
negotiation. Every request is noted (protocol, method, path, headers, body) for the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.errors import ErrorCodes

from tests.support.certs import Leaf

# One read's size and the most a test connection may read: every loop here is bounded.
_CHUNK = 65536
_MAX_READS = 10_000
_HEAD_LIMIT = 65536


@dataclass(frozen=True)
class Seen:
    """One request as the server received it; header names lower-case."""

    protocol: str  # "h2" or "http/1.1"
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    """What a route answers; `hang` sends the head and then nothing, `reset` a RST_STREAM."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    hang: bool = False
    reset: bool = False
    length: int | None = None  # a Content-Length other than the body's (a lying server)
    unsized: bool = False  # no Content-Length at all (over h2: the frames say where it ends)


def _route(seen: Seen) -> Reply:
    path = seen.path.split("?", 1)[0]
    if path == "/ok":
        return Reply(headers=[("content-type", "application/json")], body=b'{"status": "ok"}')
    if path.startswith("/status/"):
        return Reply(status=int(path.rsplit("/", 1)[1]), body=b"status")
    if path == "/big":
        return Reply(body=b"x" * 200_000)
    if path == "/redirect":
        return Reply(status=302, headers=[("location", "/ok"), ("set-cookie", "hop=1; Path=/")])
    if path == "/echo":
        echoed = {"method": seen.method, "headers": seen.headers, "body": seen.body.decode()}
        return Reply(
            headers=[("content-type", "application/json")], body=json.dumps(echoed).encode()
        )
    if path == "/gzip":
        return Reply(headers=[("content-encoding", "gzip")], body=gzip.compress(b"hello h2"))
    if path == "/unsized":
        return Reply(body=b"abc", unsized=True)
    if path == "/unsized/empty":
        return Reply(status=200, unsized=True)
    if path == "/short":
        return Reply(body=b"abc", length=5)
    if path == "/reset":
        return Reply(reset=True)
    if path == "/hang":
        return Reply(hang=True)
    return Reply(status=404, body=b"not found")


@dataclass
class H2Server:
    """The server's address and what it received."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    protocols: list[str | None] = field(default_factory=list)
    route: Callable[[Seen], Reply] = _route


class _H2Connection:
    """One HTTP/2 connection: requests answered as their streams end."""

    def __init__(self, server: H2Server, writer: asyncio.StreamWriter) -> None:
        self._server = server
        self._writer = writer
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self._requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        self._pending: dict[int, bytes] = {}

    async def serve(self, reader: asyncio.StreamReader) -> None:
        self._h2.initiate_connection()
        await self._flush()
        for _ in range(_MAX_READS):
            data = await reader.read(_CHUNK)
            if not data:
                return
            try:
                events = self._h2.receive_data(data)
            except h2.exceptions.ProtocolError:
                await self._flush()
                return
            for event in events:
                self._handle(event)
            self._send_pending()
            await self._flush()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived) and event.stream_id is not None:
            pairs = [(str(k), str(v)) for k, v in event.headers or []]
            self._requests[event.stream_id] = (dict(pairs), bytearray())
        elif isinstance(event, h2.events.DataReceived) and event.stream_id in self._requests:
            self._requests[event.stream_id][1].extend(event.data or b"")
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id in self._requests:
            self._answer(event.stream_id)

    def _answer(self, stream: int) -> None:
        headers, body = self._requests.pop(stream)
        plain = {k: v for k, v in headers.items() if not k.startswith(":")}
        seen = Seen("h2", headers[":method"], headers[":path"], plain, bytes(body))
        seen.headers[":authority"] = headers.get(":authority", "")
        self._server.seen.append(seen)
        reply = self._server.route(seen)
        if reply.reset:
            self._h2.reset_stream(stream, ErrorCodes.INTERNAL_ERROR)
            return
        head = [(":status", str(reply.status)), *reply.headers]
        if not reply.hang and not reply.unsized:
            length = len(reply.body) if reply.length is None else reply.length
            head.append(("content-length", str(length)))
        no_body = not reply.body and not reply.hang
        self._h2.send_headers(stream, head, end_stream=no_body)
        if reply.body and not reply.hang:
            self._pending[stream] = reply.body

    def _send_pending(self) -> None:
        """Send each answer's body as far as flow control allows; end it with its last byte."""
        for stream, body in list(self._pending.items()):
            room = min(self._h2.local_flow_control_window(stream), self._h2.max_outbound_frame_size)
            while body and room > 0:
                chunk, body = body[:room], body[room:]
                self._h2.send_data(stream, chunk)
                room = min(
                    self._h2.local_flow_control_window(stream), self._h2.max_outbound_frame_size
                )
            if body:
                self._pending[stream] = body
            else:
                del self._pending[stream]
                self._h2.end_stream(stream)

    async def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data:
            self._writer.write(data)
            await self._writer.drain()


async def _serve_http1(
    server: H2Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One HTTP/1.1 request, answered from the same routes, then the connection closes."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > _HEAD_LIMIT:
        return
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    seen = Seen("http/1.1", method, target, headers, body)
    server.seen.append(seen)
    reply = server.route(seen)
    if reply.reset:
        writer.transport.abort()
        return
    lines_out = [f"HTTP/1.1 {reply.status} X"]
    lines_out += [f"{name}: {value}" for name, value in reply.headers]
    if reply.hang:
        writer.write(("\r\n".join(lines_out) + "\r\n\r\n").encode())
        await reader.read(_CHUNK)  # until the client gives up
        return
    lines_out += [f"content-length: {len(reply.body)}", "connection: close"]
    writer.write(("\r\n".join(lines_out) + "\r\n\r\n").encode() + reply.body)
    await writer.drain()


def server_context(leaf: Leaf, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> ssl.SSLContext:
    """The leaf's server context offering these ALPN protocols."""
    context = leaf.server_context()
    context.set_alpn_protocols(list(alpn))
    return context


class RunningH2Server:
    """Starts the server on 127.0.0.1 and stops it with every connection it holds."""

    def __init__(self, leaf: Leaf, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> None:
        self.state = H2Server()
        self._context = server_context(leaf, alpn)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> H2Server:
        self._server = await asyncio.start_server(
            self._connection, "127.0.0.1", 0, ssl=self._context
        )
        port = self._server.sockets[0].getsockname()[1]
        self.state.url = f"https://localhost:{port}"
        return self.state

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        ssl_object = writer.get_extra_info("ssl_object")
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self.state.protocols.append(chosen)
        try:
            if chosen == "h2":
                await _H2Connection(self.state, writer).serve(reader)
            else:
                await _serve_http1(self.state, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away: its test judges what it saw
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def stop(self) -> None:
        """Stop listening, drop every connection still open and wait for its handler (each
        ends on the dropped connection; one that does not within 5 s is cancelled)."""
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=5)
            for task in late:
                task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

"""A response body decoded as the check's `compression:` says, capped on its decoded size.

Nothing is decoded unless a check asks (blackbox_exporter sends no Accept-Encoding and never
decodes on its own): a page served as `br` that nobody asked about is judged by its raw
bytes. When a check asks, the body is decoded with that algorithm whatever the response's
Content-Encoding says, as blackbox_exporter does; `deflate` takes zlib-wrapped streams as
well as raw DEFLATE, `gzip` every member of a multi-member body, and an empty body (a 204,
a HEAD) is empty in any encoding.
"""

from __future__ import annotations

import importlib
import zlib
from typing import Any, Protocol

from prober.config.model import Compression

_GZIP_WBITS = 16 + zlib.MAX_WBITS


class BodyTooLarge(Exception):
    """The body (decoded, where the check decodes) is over `max_body_bytes`."""


class UndecodableBody(Exception):
    """The body is not in the encoding the check's `compression:` names."""


class _Stream(Protocol):
    def feed(self, chunk: bytes, room: int) -> bytes: ...
    def done(self) -> bool: ...


class _Zlib:
    """zlib, raw DEFLATE or gzip; gzip of any number of members (RFC 1952 2.2: `gzip -c a >>
    f; gzip -c b >> f`), each member's decoder started on the bytes the last one left over,
    as Go's gzip.Reader does by default. A member boundary may fall anywhere in a chunk."""

    def __init__(self, wbits: int | None) -> None:
        self._wbits = wbits  # None: deflate, zlib-wrapped or raw, told by the first bytes
        self._inner: Any = zlib.decompressobj(wbits) if wbits is not None else None
        self._members = wbits == _GZIP_WBITS

    def feed(self, chunk: bytes, room: int) -> bytes:
        if self._inner is None:
            wrapped = (
                len(chunk) >= 2 and chunk[0] & 0x0F == 8 and (chunk[0] << 8 | chunk[1]) % 31 == 0
            )
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        out = self._inflate(chunk, room)
        while self._members and self._inner.eof and self._inner.unused_data and len(out) <= room:
            rest = self._inner.unused_data  # the next member's first bytes
            self._inner = zlib.decompressobj(_GZIP_WBITS)
            out += self._inflate(rest, room - len(out))
        return out

    def _inflate(self, data: bytes, room: int) -> bytes:
        """What `data` decodes to in the current stream, at most one byte past `room`:
        max_length bounds the memory a bomb can take."""
        out = self._inner.decompress(data, room + 1)
        while self._inner.unconsumed_tail and len(out) <= room:
            out += self._inner.decompress(self._inner.unconsumed_tail, room + 1 - len(out))
        return bytes(out)

    def done(self) -> bool:
        return self._inner is None or bool(self._inner.eof)


class _Brotli:
    def __init__(self) -> None:
        module = next((m for m in map(_optional, ("brotli", "brotlicffi")) if m is not None), None)
        if module is None:  # the config refuses `br` without it; a reload could race an uninstall
            raise UndecodableBody("compression br needs the brotli package")
        self._inner = module.Decompressor()

    def feed(self, chunk: bytes, room: int) -> bytes:
        return bytes(self._inner.process(chunk))

    def done(self) -> bool:
        finished = getattr(self._inner, "is_finished", None)
        return bool(finished()) if finished is not None else True


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _stream(compression: Compression) -> _Stream:
    if compression == "gzip":
        return _Zlib(_GZIP_WBITS)
    if compression == "deflate":
        return _Zlib(None)
    return _Brotli()


class BodyReader:
    """Collects a body chunk by chunk, decoding it if the check asks, within `cap` bytes."""

    def __init__(self, compression: Compression | None, cap: int) -> None:
        self._compression = compression if compression != "identity" else None
        self._cap = cap
        self._stream: _Stream | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self.wire_bytes = 0

    def feed(self, chunk: bytes) -> None:
        """Take the next raw chunk; raise BodyTooLarge or UndecodableBody."""
        self.wire_bytes += len(chunk)
        if self._compression is not None and chunk:
            if self._stream is None:
                self._stream = _stream(self._compression)
            try:
                chunk = self._stream.feed(chunk, self._cap - self._size)
            except (zlib.error, ValueError, OSError) as exc:
                raise UndecodableBody(f"body is not {self._compression}: {exc}") from None
            except Exception as exc:  # brotli.error derives from Exception only
                if type(exc).__module__.startswith(("brotli", "_brotli")):
                    raise UndecodableBody(f"body is not br: {exc}") from None
                raise
        self._size += len(chunk)
        if self._size > self._cap:
            raise BodyTooLarge
        self._chunks.append(chunk)

    def body(self) -> bytes:
        """The whole body, decoded; a truncated compressed stream is UndecodableBody."""
        if self._stream is not None and not self._stream.done():
            raise UndecodableBody(f"{self._compression} body ends before its stream does")
        return b"".join(self._chunks)

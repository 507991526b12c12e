"""A response body as it arrives: capped, and inflated as it comes when it is gzip or deflate.

Inflating chunk by chunk with an output limit keeps memory at the cap whatever the ratio
(a small gzip bomb stops at `max_body_bytes`, never expands in full).
"""

from __future__ import annotations

import zlib

from prober.probes.net.h1_values import BodyTooLarge, ProtocolError

# Content-Encoding values that are decoded, as aiohttp decodes them (exact, lower-cased).
_ENCODINGS = frozenset({"gzip", "deflate"})
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def decoded_encoding(content_encoding: str | None) -> str | None:
    """The encoding to undo for this Content-Encoding header, or None to keep the bytes."""
    if content_encoding is None:
        return None
    encoding = content_encoding.strip().lower()
    return encoding if encoding in _ENCODINGS else None


class BodyBuffer:
    """Collects body bytes up to `cap` decoded; `wire_length` counts them before decoding."""

    def __init__(self, cap: int, encoding: str | None) -> None:
        self._cap = cap
        self._encoding = encoding
        self._inflater: zlib._Decompress | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self.wire_length = 0

    def feed(self, chunk: bytes) -> None:
        """Take the next piece of the (de-chunked) body; raise BodyTooLarge or ProtocolError."""
        self.wire_length += len(chunk)
        if self._encoding is None:
            self._keep(chunk)
            return
        try:
            self._inflate(chunk)
        except zlib.error:
            raise ProtocolError(f"the body is not valid {self._encoding} data") from None

    def finish(self) -> bytes:
        """The whole body; a compressed stream must have reached its end."""
        inflater = self._inflater
        if inflater is not None and not inflater.eof:
            raise ProtocolError(f"the {self._encoding} body ends before its stream does")
        return b"".join(self._chunks)

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._cap:
            raise BodyTooLarge(f"body larger than max_body_bytes ({self._cap})")
        if data:
            self._chunks.append(data)

    def _inflate(self, data: bytes) -> None:
        while data:
            inflater = self._inflater
            if inflater is None:
                inflater = self._inflater = zlib.decompressobj(self._wbits(data))
            # One byte past the room left: output that long proves the body too large, and
            # shorter output means the input was all consumed.
            self._keep(inflater.decompress(data, self._cap - self._size + 1))
            data = b""
            if inflater.eof and inflater.unused_data and self._encoding == "gzip":
                data = inflater.unused_data  # the next member of a concatenated gzip
                self._inflater = None

    def _wbits(self, first: bytes) -> int:
        if self._encoding == "gzip":
            return _GZIP_WBITS
        # RFC 9110 deflate is zlib-wrapped; some servers send raw deflate (aiohttp takes both).
        return zlib.MAX_WBITS if first[0] & 0x0F == 8 else -zlib.MAX_WBITS

"""A response body as it arrives for h1: capped, decoded only when the check asks.

The decoding is `encoding.BodyReader`'s, the aiohttp path's: nothing is decoded unless the
check sets `compression:`, and then blindly with that algorithm (as blackbox_exporter), so
both paths judge the same bytes. Here its failures become h1's own errors.
"""

from __future__ import annotations

from prober.config.model import Compression
from prober.probes.net import encoding
from prober.probes.net.h1_values import BodyTooLarge, ProtocolError


class BodyBuffer:
    """Collects body bytes up to `cap` (decoded, where decoded); `wire_length` counts them
    before decoding."""

    def __init__(self, cap: int, compression: Compression | None) -> None:
        self._cap = cap
        self._reader = encoding.BodyReader(compression, cap)

    @property
    def wire_length(self) -> int:
        return self._reader.wire_bytes

    def feed(self, chunk: bytes) -> None:
        """Take the next piece of the (de-chunked) body; raise BodyTooLarge or ProtocolError."""
        try:
            self._reader.feed(chunk)
        except encoding.BodyTooLarge:
            raise BodyTooLarge(f"body larger than max_body_bytes ({self._cap})") from None
        except encoding.UndecodableBody as exc:
            raise ProtocolError(str(exc)) from None

    def finish(self) -> bytes:
        """The whole body; a compressed stream must have reached its end."""
        try:
            return self._reader.body()
        except encoding.UndecodableBody as exc:
            raise ProtocolError(str(exc)) from None

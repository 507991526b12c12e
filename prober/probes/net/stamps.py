"""The stamps every net/ client takes on its way to a ready connection, and the spans between.

Each client's `Timeline` subclasses `DialTimeline`: it adds the stamps of its own protocol
after `secured` and names its phases in `STAMPS`, so the spans, the phase in progress and
the rule "the phase still running ends at `ended`" are written once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generic, Literal, TypeVar, cast

PhaseT = TypeVar("PhaseT", bound=str)
DialPhase = Literal["resolve", "connect", "tls"]
# The dial's stamps in the order an exchange passes them, each with the phase ending there;
# a client's `STAMPS` are these, then its own.
DIAL_STAMPS: tuple[tuple[str, DialPhase], ...] = (
    ("resolved", "resolve"),
    ("connected", "connect"),
    ("secured", "tls"),
)


@dataclass(frozen=True, slots=True)
class DialTimeline(Generic[PhaseT]):
    """perf_counter stamps of one exchange, taken in the transport callbacks; 0.0 = not reached.

    An IP-literal host has no resolve phase (`resolved` is `started`); `secured` is when the
    connection was ready for the protocol (the handshake's end with TLS, the TCP connect
    without, so the tls phase is 0). `ended` is when the exchange ended, with its last stamp
    or its failure: the phase in progress then runs up to it.
    """

    # Every stamp in the order an exchange passes it, with the phase that ends there.
    STAMPS: ClassVar[tuple[tuple[str, str], ...]] = DIAL_STAMPS
    # The phase an exchange that passed every stamp is said to have ended in.
    COMPLETED: ClassVar[str] = "tls"

    started: float
    resolved: float = 0.0
    connected: float = 0.0
    secured: float = 0.0
    ended: float = 0.0

    @property
    def phase(self) -> PhaseT:
        """The phase the exchange was in when it ended (the last one when it completed)."""
        for stamp, phase in self.STAMPS:
            if not getattr(self, stamp):
                return cast(PhaseT, phase)
        return cast(PhaseT, self.COMPLETED)

    def _span(self, begin: float, end: float) -> float:
        """Seconds from `begin` to `end`, or to `ended` for the phase still in progress."""
        end = end or self.ended
        if not begin or not end:
            return 0.0
        return max(end - begin, 0.0)

    @property
    def resolve(self) -> float:
        return self._span(self.started, self.resolved)

    @property
    def connect(self) -> float:
        return self._span(self.resolved, self.connected)

    @property
    def tls(self) -> float:
        return self._span(self.connected, self.secured)

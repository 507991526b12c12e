"""Plain result values that probes return and sinks read; no I/O, no metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from prober.config.secrets import NO_SECRETS, Redactor

# How much of a value an assertion outcome shows: enough to recognise it, bounded for logs.
_SHOWN_CHARS = 64


class Reason(StrEnum):
    """Why a run failed: a small closed set, safe to use as a label value."""

    TIMEOUT = "timeout"
    CONNECT_REFUSED = "connect_refused"
    CONNECT_ERROR = "connect_error"
    DNS = "dns"
    TLS = "tls"
    TLS_HANDSHAKE = "tls_handshake"
    TLS_CERT_INVALID = "tls_cert_invalid"
    TLS_CERT_EXPIRED = "tls_cert_expired"
    STATUS = "status"
    ASSERTION = "assertion"
    BODY_TOO_LARGE = "body_too_large"
    INVALID_JSON = "invalid_json"
    TEMPLATE = "template"
    INVALID_URL = "invalid_url"
    PROTOCOL = "protocol"
    RESET = "reset"
    # The prober itself ran out of file descriptors (EMFILE/ENFILE): not the target's fault.
    RESOURCE = "resource"
    ERROR = "error"
    INTERNAL = "internal"


PHASE_NAMES: tuple[str, ...] = ("resolve", "connect", "tls", "processing", "transfer")


@dataclass(frozen=True, slots=True)
class Phases:
    """Seconds spent in each phase of one request; phases never overlap."""

    resolve: float = 0.0
    connect: float = 0.0
    tls: float = 0.0
    processing: float = 0.0
    transfer: float = 0.0

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        return (self.resolve, self.connect, self.tls, self.processing, self.transfer)


@dataclass(frozen=True, slots=True)
class AssertionOutcome:
    """One assertion with the value it saw, like `[STATUS] (500) == 200`.

    `actual` is already free of secrets and short: build it with `shown()`.
    """

    text: str
    passed: bool
    actual: str


def shown(text: str, redactor: Redactor = NO_SECRETS) -> str:
    """`text` with secrets hidden, cut to the length an AssertionOutcome shows (`...` when cut).

    Redacted before the cut, so a secret that straddles the cut shows no prefix.
    """
    return redactor.excerpt(text, _SHOWN_CHARS)


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one request of a check did. `message` is already free of secrets.

    `protocol` is http, tcp or dns. For http, `content_length` is the Content-Length header
    (-1 when absent) and `body_length` the bytes read after decompression; dns steps carry
    `answer_count`; `dns_lookup_time` is the name resolution (tcp) or the query (dns).
    """

    name: str
    success: bool
    duration: float
    reason: Reason | None = None
    message: str = ""
    status_code: int | None = None
    phases: Phases = field(default_factory=Phases)
    assertions: tuple[AssertionOutcome, ...] = ()
    extracted: tuple[tuple[str, str], ...] = ()
    critical: bool = True
    cached: bool = False
    request_line: str = ""
    tls_expiry: float | None = None
    tls_version: str | None = None
    redirects: int = 0
    content_length: int | None = None
    http_version: str | None = None
    protocol: str = "http"
    body_length: int | None = None
    answer_count: int | None = None
    dns_lookup_time: float | None = None
    # A pooled flow's step: how many of the run's accounts ran it, and how many failed it.
    accounts: int = 0
    accounts_failed: int = 0
    # A polled step: seconds from its first request to the one that passed (or gave up),
    # and whether that was over its `degraded_after`.
    waited: float | None = None
    slow: bool = False


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    """One failed attempt; retried attempts are still counted as failures."""

    reason: Reason
    failed_step: str


@dataclass(frozen=True, slots=True)
class Result:
    """What one run of a check found, ready for the sinks."""

    check: str
    success: bool
    duration: float
    started_at: float
    reason: Reason | None = None
    message: str = ""
    failed_step: str = ""
    steps: tuple[StepResult, ...] = ()
    attempts: int = 1
    failures: tuple[AttemptFailure, ...] = ()
    degraded: bool = False
    loop_lag_exceeded: bool = False
    # A pooled flow's run: the Result of each account it ran as (empty otherwise); in such
    # an account's own Result, the account.
    accounts: tuple[Result, ...] = ()
    account: str = ""

    @property
    def accounts_failed(self) -> int:
        return sum(1 for run in self.accounts if not run.success)

    @property
    def tls_expiry(self) -> float | None:
        """Earliest certificate expiry seen by any step, in unix seconds."""
        expiries = [s.tls_expiry for s in self.steps if s.tls_expiry is not None]
        return min(expiries) if expiries else None

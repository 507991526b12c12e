"""Plain result values that probes return and sinks read; no I/O, no metrics."""

from __future__ import annotations

from dataclasses import dataclass
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
class CertInfo:
    """The leaf certificate as blackbox_exporter's `probe_ssl_last_chain_info` labels it."""

    fingerprint_sha256: str
    subject: str
    issuer: str
    subjectalternative: str
    serialnumber: str

    def labels(self) -> tuple[tuple[str, str], ...]:
        return (
            ("fingerprint_sha256", self.fingerprint_sha256),
            ("subject", self.subject),
            ("issuer", self.issuer),
            ("subjectalternative", self.subjectalternative),
            ("serialnumber", self.serialnumber),
        )


@dataclass(frozen=True, slots=True)
class TlsFacts:
    """What the TLS handshake of a step showed; a field is None where the handshake did not
    tell.

    `expiry` is the earliest notAfter (unix seconds) of every certificate the server sent,
    `chain_expiry` the earliest of the chain the verifier built (None without verification),
    `leaf` the served leaf's names.
    """

    version: str | None = None
    expiry: float | None = None
    chain_expiry: float | None = None
    leaf: CertInfo | None = None


@dataclass(frozen=True, slots=True)
class HttpFacts:
    """What one HTTP request showed. Without a response, `status_code` is None.

    `content_length` is the final response's Content-Length on the wire (-1 when absent, 0
    for a 204 or 304, as Go reads it), `body_length` the bytes read after decoding; `tls` is
    set where the final connection spoke TLS. `redirects` counts redirect responses as
    blackbox_exporter does. `ip_protocol` (4 or 6) and `ip_addr_hash` (FNV-1a 32 of the
    address bytes) describe the final connection's peer; `failed_due_to_regex` whether a
    header or body regex failed the step; `last_modified` the Last-Modified header as unix
    seconds, where it parses.
    """

    status_code: int | None = None
    phases: Phases = Phases()
    redirects: int = 0
    content_length: int | None = None
    body_length: int | None = None
    http_version: str | None = None
    tls: TlsFacts | None = None
    ip_protocol: int | None = None
    ip_addr_hash: float | None = None
    failed_due_to_regex: bool = False
    last_modified: float | None = None


@dataclass(frozen=True, slots=True)
class TcpFacts:
    """What one TCP exchange showed: its phases (no transfer), the name resolution's time
    (None when it did not finish) and, with `use_tls`, the handshake's facts."""

    phases: Phases = Phases()
    lookup_time: float | None = None
    tls: TlsFacts | None = None


@dataclass(frozen=True, slots=True)
class DnsFacts:
    """What one DNS query showed. Phases: resolve (the server's name), connect (the socket,
    a TCP handshake over tcp) and processing (the query's round trip). The record counts of
    each section are None without a response; `serial` is the answer's SOA serial for a SOA
    query (0 without one) and None for other types; `lookup_time` is the server name's
    resolution (None when it did not finish), as blackbox_exporter's. Over TLS
    (`dns_over_tls`) the handshake is the tls phase and `tls` what it showed."""

    phases: Phases = Phases()
    answer_count: int | None = None
    lookup_time: float | None = None
    authority_count: int | None = None
    additional_count: int | None = None
    serial: int | None = None
    tls: TlsFacts | None = None


@dataclass(frozen=True, slots=True)
class GrpcFacts:
    """What one gRPC health check call showed. Phases: resolve, connect, tls and processing
    (the `check` phase: HTTP/2 setup, request and answer). `serving_status` is the answer's
    (SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN; None without an answer); `status_code`
    the call's gRPC status (0 OK, 4 DEADLINE_EXCEEDED, 5 NOT_FOUND, 14 UNAVAILABLE, ...;
    None when no call was made); `tls` is set where the connection spoke TLS."""

    phases: Phases = Phases()
    serving_status: str | None = None
    status_code: int | None = None
    tls: TlsFacts | None = None


@dataclass(frozen=True, slots=True)
class WsFacts:
    """What one WebSocket exchange showed. Phases: resolve, connect, tls, processing (the
    `handshake`: the HTTP upgrade) and transfer (`first_message`: the send, then the wait for
    the matching message). `status_code` is the upgrade's answer (101, or the refusal's
    status; None without one); `messages` how many messages were read."""

    phases: Phases = Phases()
    status_code: int | None = None
    messages: int = 0
    tls: TlsFacts | None = None


# The facts of one step, one type per kind of request; sinks dispatch on the type.
Facts = HttpFacts | TcpFacts | DnsFacts | GrpcFacts | WsFacts


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one step of a check did. `message` is already free of secrets.

    `facts` are what its request showed, typed by the kind of request; None where no
    request was made (a reused login) or the run was cut short before the step could say.
    """

    name: str
    success: bool
    duration: float
    reason: Reason | None = None
    message: str = ""
    facts: Facts | None = None
    assertions: tuple[AssertionOutcome, ...] = ()
    extracted: tuple[tuple[str, str], ...] = ()
    critical: bool = True
    cached: bool = False
    request_line: str = ""
    # A pooled flow's step: how many of the run's accounts ran it, and how many failed it.
    accounts: int = 0
    accounts_failed: int = 0
    # A polled step: seconds from its first request to the one that passed (or gave up),
    # and whether that was over its `degraded_after`.
    waited: float | None = None
    slow: bool = False

    @property
    def tls(self) -> TlsFacts | None:
        """The TLS facts nested in the step's facts, where its request spoke TLS."""
        tls = getattr(self.facts, "tls", None)
        return tls if isinstance(tls, TlsFacts) else None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a probe found in one attempt: its steps, and why it failed (no reason: it passed).

    The probe's whole answer; the runner adds the clock and the attempts to make a Result.
    A pooled flow's Outcome carries each account's own (`accounts`, each with its `account`).
    """

    steps: tuple[StepResult, ...] = ()
    reason: Reason | None = None
    message: str = ""
    failed_step: str = ""
    accounts: tuple[Outcome, ...] = ()
    account: str = ""

    @property
    def success(self) -> bool:
        return self.reason is None


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    """One failed attempt; retried attempts are still counted as failures."""

    reason: Reason
    failed_step: str


@dataclass(frozen=True, slots=True)
class Result:
    """What one run of a check found, ready for the sinks: made by the runner alone, from
    the probe's Outcome plus the clock (`started_at`, `duration`) and the attempts."""

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
        expiries = [s.tls.expiry for s in self.steps if s.tls and s.tls.expiry is not None]
        return min(expiries) if expiries else None

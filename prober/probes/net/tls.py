"""TLS as a client, shared by the http and tcp probes (not a kind of its own).

Builds SSL contexts from `TlsOptions`, times the handshake, reads what the peer's certificate
says (expiry, protocol version) and names a TLS failure with a bounded `Reason`.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509

from prober.config.model import TlsOptions
from prober.result import Reason

# OpenSSL's X509_V_ERR_CERT_HAS_EXPIRED: the one verify code that means "expired".
_CERT_HAS_EXPIRED = 10

_VERSION_NAMES = {
    "TLSv1": "TLS 1.0",
    "TLSv1.1": "TLS 1.1",
    "TLSv1.2": "TLS 1.2",
    "TLSv1.3": "TLS 1.3",
}


# Where the handshakes started in the current request's context are collected.
_HANDSHAKES: ContextVar[list[TimedSSLObject] | None] = ContextVar("handshakes", default=None)


class TimedSSLObject(ssl.SSLObject):
    """An SSLObject that remembers when its handshake started and finished (perf_counter).

    asyncio drives the handshake by calling `do_handshake()` until it stops raising
    SSLWantRead; the first call comes right after the TCP connection is made, from a callback
    that runs in a copy of the connecting task's context, so the object can enrol itself in
    that request's `collect_handshakes` list. Plugged in through `SSLContext.sslobject_class`,
    a documented hook: no private API of aiohttp or asyncio is touched. Where the callback
    runs elsewhere the handshake is simply not seen (its time then counts as connect).
    """

    handshake_started: float = 0.0
    handshake_done: float = 0.0

    def do_handshake(self) -> None:
        if not self.handshake_started:
            self.handshake_started = time.perf_counter()
            collected = _HANDSHAKES.get()
            if collected is not None:
                collected.append(self)
        super().do_handshake()
        self.handshake_done = time.perf_counter()

    @property
    def handshake_seconds(self) -> float:
        """How long the handshake took; 0 if it has not finished."""
        if not self.handshake_done:
            return 0.0
        return self.handshake_done - self.handshake_started


class TlsSetupError(Exception):
    """The CA, certificate or key file of a check's `tls` options cannot be loaded."""


@contextmanager
def collect_handshakes(into: list[TimedSSLObject]) -> Iterator[None]:
    """Append every TLS handshake this task starts inside the block to `into`."""
    token = _HANDSHAKES.set(into)
    try:
        yield
    finally:
        _HANDSHAKES.reset(token)


def build_context(options: TlsOptions) -> ssl.SSLContext:
    """A client context for these options. Reads the CA and key files: call it off the loop."""
    try:
        context = ssl.create_default_context(cafile=options.ca_file)
        if options.cert_file:
            context.load_cert_chain(options.cert_file, options.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load the tls files: {exc}") from None
    if options.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.sslobject_class = TimedSSLObject
    return context


@dataclass(frozen=True, slots=True)
class PeerFacts:
    """What a finished handshake tells: protocol version, leaf certificate expiry, duration."""

    version: str | None
    expiry: float | None
    handshake_seconds: float


def peer_facts(ssl_object: ssl.SSLObject) -> PeerFacts:
    """Read the version and the leaf certificate's notAfter, verified or not.

    `getpeercert()` is empty when verification is off, so the DER form is parsed instead:
    `insecure_skip_verify` still reports when the certificate expires.
    """
    seconds = ssl_object.handshake_seconds if isinstance(ssl_object, TimedSSLObject) else 0.0
    version, expiry = session_facts(ssl_object.version(), ssl_object.getpeercert(binary_form=True))
    return PeerFacts(version, expiry, seconds)


def session_facts(raw_version: str | None, der: bytes | None) -> tuple[str | None, float | None]:
    """The protocol's name ("TLS 1.3") and the leaf's notAfter (unix seconds) of a session."""
    version = _VERSION_NAMES.get(raw_version, raw_version) if raw_version else None
    return version, certificate_expiry(der) if der else None


@lru_cache(maxsize=256)
def certificate_expiry(der: bytes) -> float | None:
    """The DER certificate's notAfter; cached, as a target shows the same one run after run."""
    try:
        return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
    except ValueError:
        return None


def tls_reason(exc: BaseException) -> Reason:
    """Tell an expired certificate from an otherwise invalid one from a failed handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code == _CERT_HAS_EXPIRED:
            return Reason.TLS_CERT_EXPIRED
        return Reason.TLS_CERT_INVALID
    return Reason.TLS_HANDSHAKE

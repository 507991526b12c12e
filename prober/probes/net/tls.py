"""TLS as a client, shared by the http and tcp probes (not a kind of its own).

Builds SSL contexts from `TlsOptions`, times the handshake, reads what the peer's certificate
says (expiry, protocol version) and names a TLS failure with a bounded `Reason`.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from prober.config.model import Check, FlowCheck, HttpCheck, RequestSpec, TcpCheck, TlsOptions
from prober.config.model_checks import DnsCheck, GrpcCheck, WebsocketCheck
from prober.probes.net.certs import earliest_expiry, leaf_info, served_chain, verified_chain
from prober.result import Reason, TlsFacts

# OpenSSL's X509_V_ERR_CERT_HAS_EXPIRED: the one verify code that means "expired".
_CERT_HAS_EXPIRED = 10

# `tls.min_version` / `max_version` as blackbox_exporter (prometheus/common) spells them.
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_VERSION_NAMES = {
    "TLSv1": "TLS 1.0",
    "TLSv1.1": "TLS 1.1",
    "TLSv1.2": "TLS 1.2",
    "TLSv1.3": "TLS 1.3",
}


# What an http check with `http2: true` offers by ALPN, as Go's client does (h2 first).
HTTP2_ALPN = ("h2", "http/1.1")
# gRPC is HTTP/2 only.
GRPC_ALPN = ("h2",)


class TlsBlock(NamedTuple):
    """A `tls:` block and the ALPN protocols offered with it: one SSL context each (ALPN is
    set per context, so an http2 check's context is not an HTTP/1.1 check's)."""

    options: TlsOptions
    alpn: tuple[str, ...] = ()


def request_tls(spec: RequestSpec) -> TlsBlock:
    """The block an HTTP request's context is built from: with h2 offered for `http2`."""
    return TlsBlock(spec.tls, HTTP2_ALPN if spec.http2 else ())


def tls_blocks(check: Check) -> frozenset[TlsBlock]:
    """The `tls:` blocks a check's connections use, each with its ALPN offer: their contexts
    are built at load, so no first run pays for one. An http check's block counts even
    without https in its URL (a redirect may go there; the default block is shared)."""
    if isinstance(check, HttpCheck):
        return frozenset({request_tls(check)})
    if isinstance(check, FlowCheck):
        return frozenset(request_tls(step) for step in check.steps)
    # A websocket URL may come whole from the environment: its block counts as http's does.
    secured = (
        (isinstance(check, TcpCheck) and check.use_tls)
        or (isinstance(check, DnsCheck) and check.dns_over_tls)
        or isinstance(check, WebsocketCheck)
    )
    if secured:
        return frozenset({TlsBlock(check.tls)})
    if isinstance(check, GrpcCheck) and check.use_tls:
        return frozenset({TlsBlock(check.tls, GRPC_ALPN)})
    return frozenset()


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


def build_context(options: TlsOptions, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A client context for these options, offering `alpn` (none if empty). Reads the CA and
    key files: call it off the loop."""
    try:
        context = ssl.create_default_context(cafile=options.ca_file)
        if options.cert_file:
            context.load_cert_chain(options.cert_file, options.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load the tls files: {exc}") from None
    if options.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    _limit_versions(context, options)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    context.sslobject_class = TimedSSLObject
    return context


def _limit_versions(context: ssl.SSLContext, options: TlsOptions) -> None:
    """Apply min_version / max_version; TLS 1.0 and 1.1 also need OpenSSL's security level 0,
    or OpenSSL 3 refuses them on this side before a byte is sent."""
    if options.min_version is not None:
        context.minimum_version = TLS_VERSIONS[options.min_version]
        if options.min_version in ("TLS10", "TLS11"):
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if options.max_version is not None:
        context.maximum_version = TLS_VERSIONS[options.max_version]


@dataclass(frozen=True, slots=True)
class PeerFacts:
    """What a finished handshake tells (version, the certificates' facts) and its duration."""

    tls: TlsFacts
    handshake_seconds: float


def peer_facts(ssl_object: ssl.SSLObject) -> PeerFacts:
    """Read the version and what the certificates the server sent say, verified or not.

    `getpeercert()` is empty when verification is off, so the DER forms are parsed instead:
    `insecure_skip_verify` still reports when the certificates expire.
    """
    facts = chain_facts(ssl_object.version(), served_chain(ssl_object), verified_chain(ssl_object))
    seconds = ssl_object.handshake_seconds if isinstance(ssl_object, TimedSSLObject) else 0.0
    return PeerFacts(facts, seconds)


def chain_facts(
    raw_version: str | None, served: Sequence[bytes], verified: Sequence[bytes]
) -> TlsFacts:
    """A session's `TlsFacts`: the protocol's name ("TLS 1.3"), the earliest expiry over the
    served chain (DER, leaf first), the verified chain's, the leaf's names; shared by the
    aiohttp path and the lean one (`h1` keeps both chains)."""
    return _chain_facts(raw_version, tuple(served), tuple(verified))


@lru_cache(maxsize=1024)
def _chain_facts(
    raw_version: str | None, served: tuple[bytes, ...], verified: tuple[bytes, ...]
) -> TlsFacts:
    """Cached by the certificates' bytes: a target serves the same chain run after run, and
    parsing it (expiries, the leaf's names) cost more than the rest of an https probe's
    own work; the facts are a frozen value, shared safely."""
    version = _VERSION_NAMES.get(raw_version, raw_version) if raw_version else None
    return TlsFacts(
        version=version,
        expiry=earliest_expiry(served),
        chain_expiry=earliest_expiry(verified),
        leaf=leaf_info(served[0]) if served else None,
    )


def tls_reason(exc: BaseException) -> Reason:
    """Tell an expired certificate from an otherwise invalid one from a failed handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code == _CERT_HAS_EXPIRED:
            return Reason.TLS_CERT_EXPIRED
        return Reason.TLS_CERT_INVALID
    return Reason.TLS_HANDSHAKE

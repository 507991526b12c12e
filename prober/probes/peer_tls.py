"""The `TlsFacts` of a standalone client's `TlsSession` (grpc and websocket probes): the
protocol in blackbox_exporter's words and the leaf certificate's expiry, verified or not."""

from __future__ import annotations

from cryptography import x509

from prober.probes.net.h1_values import TlsSession
from prober.result import TlsFacts

_VERSION_NAMES = {
    "TLSv1": "TLS 1.0",
    "TLSv1.1": "TLS 1.1",
    "TLSv1.2": "TLS 1.2",
    "TLSv1.3": "TLS 1.3",
}


def session_facts(session: TlsSession | None) -> TlsFacts | None:
    """None without TLS; a certificate that does not parse leaves the expiry unknown."""
    if session is None:
        return None
    version = _VERSION_NAMES.get(session.version, session.version) if session.version else None
    expiry: float | None = None
    if session.peer_certificate:
        try:
            certificate = x509.load_der_x509_certificate(session.peer_certificate)
        except ValueError:
            certificate = None
        if certificate is not None:
            expiry = certificate.not_valid_after_utc.timestamp()
    return TlsFacts(version, expiry)

"""What the certificates a TLS peer sent say, in blackbox_exporter's terms.

The earliest expiry is taken over every certificate the server sent (an intermediate that
expires before the leaf is what an alert must see), the last chain expiry over the chain the
verifier built, and the leaf's names are printed as Go's `pkix.Name.String()` prints them so
`probe_ssl_last_chain_info` labels match blackbox_exporter's.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from prober.result import CertInfo

_DER = 2  # _ssl.ENCODING_DER: the chains' certificates are asked for in DER
# Go's short names, and the order its Name.String() writes them (before reversing).
_GO_ORDER = (
    (NameOID.COUNTRY_NAME, "C"),
    (NameOID.STATE_OR_PROVINCE_NAME, "ST"),
    (NameOID.LOCALITY_NAME, "L"),
    (NameOID.STREET_ADDRESS, "STREET"),
    (NameOID.POSTAL_CODE, "POSTALCODE"),
    (NameOID.ORGANIZATION_NAME, "O"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "OU"),
)
_SINGLE = ((NameOID.COMMON_NAME, "CN"), (NameOID.SERIAL_NUMBER, "SERIALNUMBER"))
_KNOWN = frozenset(oid for oid, _ in (*_GO_ORDER, *_SINGLE))
_PRINTABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")
_ESCAPED = frozenset(',+"\\<>;')


def _ders(chain: Sequence[Any] | None) -> list[bytes]:
    return [cert.public_bytes(_DER) for cert in chain or ()]


def served_chain(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The certificates the peer sent, leaf first, in DER, whether verified or not.

    Python 3.11 has no public API for the chain: the SSLObject's `_sslobj` does (public as
    `get_unverified_chain` from 3.13). Without it, the leaf alone.
    """
    inner = getattr(ssl_object, "_sslobj", None)
    getter = getattr(inner, "get_unverified_chain", None)
    if getter is not None:
        chain = _ders(getter())
        if chain:
            return chain
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def verified_chain(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The chain OpenSSL verified (leaf to trust anchor); empty when verification is off,
    where OpenSSL would otherwise hand back the unverified chain."""
    if ssl_object.context.verify_mode == ssl.CERT_NONE:
        return []
    getter = getattr(getattr(ssl_object, "_sslobj", None), "get_verified_chain", None)
    return _ders(getter()) if getter is not None else []


def _load(ders: Sequence[bytes]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for der in ders:
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    return certs


def earliest_expiry(ders: Sequence[bytes]) -> float | None:
    """The earliest notAfter (unix seconds) of these certificates; None if there are none."""
    expiries = [cert.not_valid_after_utc.timestamp() for cert in _load(ders)]
    return min(expiries) if expiries else None


def leaf_info(der: bytes) -> CertInfo | None:
    """The leaf's fingerprint, names and serial, as blackbox_exporter labels them."""
    certs = _load([der])
    if not certs:
        return None
    cert = certs[0]
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = ",".join(sans.get_values_for_type(x509.DNSName))
    except (x509.ExtensionNotFound, ValueError):
        dns_names = ""
    serial = cert.serial_number
    return CertInfo(
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        subject=go_name(cert.subject),
        issuer=go_name(cert.issuer),
        subjectalternative=dns_names,
        serialnumber=serial.to_bytes((serial.bit_length() + 7) // 8, "big").hex(),
    )


def go_name(name: x509.Name) -> str:
    """`name` as Go's pkix.Name.String() prints it (blackbox's subject and issuer labels).

    Unknown attributes first (one RDN each, in certificate order), then C, ST, L, STREET,
    POSTALCODE, O, OU (one RDN each, every value joined by `+`), the last CN, SERIALNUMBER;
    the whole printed in reverse, comma-separated.
    """
    attributes = list(name)
    rdns: list[list[str]] = [
        [f"{a.oid.dotted_string}=#{_der_string(_text(a.value))}"]
        for a in attributes
        if a.oid not in _KNOWN
    ]
    for oid, short in _GO_ORDER:
        values = [_escape(_text(a.value)) for a in attributes if a.oid == oid]
        if values:
            rdns.append([f"{short}={v}" for v in values])
    for oid, short in _SINGLE:
        values = [_text(a.value) for a in attributes if a.oid == oid]
        if values:
            rdns.append([f"{short}={_escape(values[-1])}"])
    return ",".join("+".join(rdn) for rdn in reversed(rdns))


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _escape(value: str) -> str:
    out: list[str] = []
    last = len(value) - 1
    for index, char in enumerate(value):
        escape = (
            char in _ESCAPED or (char == " " and index in (0, last)) or (char == "#" and index == 0)
        )
        out.append("\\" + char if escape else char)
    return "".join(out)


def _der_string(value: str) -> str:
    """Hex of the DER of `value` as Go's asn1.Marshal writes a string (Printable or UTF8)."""
    body = value.encode()
    tag = 0x13 if all(c in _PRINTABLE for c in value) else 0x0C
    size = len(body)
    length = bytes([size]) if size < 0x80 else _long_length(size)
    return (bytes([tag]) + length + body).hex()


def _long_length(size: int) -> bytes:
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw

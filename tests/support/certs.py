"""Certificates made during the test run: a CA and leaves with any names and validity.

EC P-256 keys, so making a dozen costs milliseconds. Used by the TLS, TCP and IPv6 tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Leaf:
    """A certificate and its key as PEM files, with its notAfter."""

    cert: Path
    key: Path
    not_after: datetime.datetime

    def server_context(self, client_ca: Path | None = None) -> ssl.SSLContext:
        """A server context serving this certificate; with client_ca, clients must show one."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        if client_ca is not None:
            context.load_verify_locations(cafile=str(client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


@dataclass(frozen=True)
class Intermediate:
    """A CA certificate signed by the factory's CA: leaves issued by it serve it too."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    not_after: datetime.datetime


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


class CertFactory:
    """A test CA that issues leaves; `ca_file` is what a check's `tls.ca_file` points at."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._ca = (
            x509.CertificateBuilder()
            .subject_name(_name("prober test CA"))
            .issuer_name(_name("prober test CA"))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self._ca.public_bytes(serialization.Encoding.PEM))
        self._count = 0

    def intermediate(self, days: float = 30) -> Intermediate:
        """An intermediate CA under the factory's CA, valid from yesterday for `days` days."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._count += 1
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"prober test intermediate {self._count}"))
            .issuer_name(self._ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days - 1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return Intermediate(cert, key, cert.not_valid_after_utc)

    def issue(
        self,
        names: tuple[str, ...] = LOOPBACK_NAMES,
        *,
        days: float = 30,
        starts_in_days: float = -1,
        self_signed: bool = False,
        via: Intermediate | None = None,
    ) -> Leaf:
        """A leaf for these names valid from now+starts_in_days for `days` days; issued `via`
        an intermediate, its file holds the chain (leaf, then the intermediate)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        not_before = now + datetime.timedelta(days=starts_in_days)
        not_after = not_before + datetime.timedelta(days=days)
        issuer, signer = (_name(names[0]), key) if self_signed else (self._ca.subject, self._key)
        if via is not None:
            issuer, signer = via.cert.subject, via.key
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(_san(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if self_signed:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True
            )
        else:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        cert = builder.sign(signer, hashes.SHA256())
        self._count += 1
        cert_path = self.directory / f"leaf{self._count}.pem"
        key_path = self.directory / f"leaf{self._count}-key.pem"
        chain = [cert] if via is None else [cert, via.cert]
        cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Leaf(cert_path, key_path, cert.not_valid_after_utc)

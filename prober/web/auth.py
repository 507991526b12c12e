"""TLS and basic auth for the web endpoints, from a Prometheus exporter-toolkit web config file.

The file format is the one every Prometheus exporter reads with `--web.config.file`:

    tls_server_config: {cert_file, key_file, client_auth_type, client_ca_file, min_version,
                        max_version, cipher_suites, prefer_server_cipher_suites,
                        curve_preferences}
    http_server_config: {headers: {...}}
    basic_auth_users: {user: bcrypt-hash}

Relative paths are relative to the web config file. Errors are located like config errors and
never echo values (a password hash is not for logs).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import aiohttp
import bcrypt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from prober.config.load import load_off_loop
from prober.config.located import ConfigError, ConfigIssue, KeyPath, validation_issues
from prober.config.model import Model
from prober.config.read import MAX_CONFIG_BYTES, read_bounded, read_document

log = logging.getLogger("prober.web.app")

_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(\d{2})\$[./A-Za-z0-9]{53}$")
_BCRYPT_COSTS = range(4, 32)
# bcrypt is slow on purpose: at most this many verifications at once, off the event loop.
_BCRYPT_SLOTS = 2
# The headers exporter-toolkit allows in http_server_config.headers.
_ALLOWED_HEADERS = {
    name.lower(): name
    for name in (
        "Strict-Transport-Security",
        "X-Content-Type-Options",
        "X-Frame-Options",
        "X-XSS-Protection",
        "Content-Security-Policy",
    )
}
# Liveness endpoints answer without credentials so container and kubelet probes keep working;
# they reveal nothing but "the process is up".
OPEN_PATHS = frozenset({"/-/healthy", "/-/ready"})
REALM = "prober"

TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's names (what exporter-toolkit reads) -> OpenSSL's, for TLS 1.0-1.2. Go does not let
# TLS 1.3 suites be chosen and neither does Python's ssl: those names are accepted, no-ops.
_CIPHER_SUITES: dict[str, str | None] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
}
# Go's curve names -> OpenSSL's group names.
_CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}
_VERIFY_MODES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


def _bcrypt_hash(value: str) -> str:
    match = _BCRYPT_HASH.match(value)
    if not match:
        raise ValueError(
            "must be a bcrypt hash ($2y$10$... from `htpasswd -nBC 10 USER`), not a plain password"
        )
    if int(match[1]) not in _BCRYPT_COSTS:
        raise ValueError("bcrypt cost must be 04 to 31")
    return value


def _known(table: Mapping[str, object], what: str) -> Callable[[list[str]], list[str]]:
    """A validator: every name must be a key of `table` (exporter-toolkit's Go names)."""

    def check(names: list[str]) -> list[str]:
        for name in names:
            if name not in table:
                raise ValueError(f"unknown {what} {name!r}; known: {', '.join(table)}")
        return names

    return check


BcryptHash = Annotated[str, AfterValidator(_bcrypt_hash)]
CipherSuites = Annotated[list[str], AfterValidator(_known(_CIPHER_SUITES, "cipher suite"))]
Curves = Annotated[list[str], AfterValidator(_known(_CURVES, "curve"))]


class TlsServerConfig(Model):
    """`tls_server_config`: the server certificate and how clients are authenticated."""

    cert_file: str
    key_file: str
    client_auth_type: ClientAuthType | None = None
    client_ca_file: str | None = None
    min_version: TlsVersion = "TLS12"
    max_version: TlsVersion = "TLS13"
    cipher_suites: CipherSuites = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    curve_preferences: Curves = Field(default_factory=list)

    @field_validator("client_auth_type")
    @classmethod
    def _supported(cls, value: ClientAuthType | None) -> ClientAuthType | None:
        if value in ("RequestClientCert", "RequireAnyClientCert"):
            raise ValueError(
                f"{value} is not supported: Python's TLS cannot accept a client certificate "
                "without verifying it; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TlsServerConfig:
        if self.client_auth_type not in (None, "NoClientCert") and not self.client_ca_file:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            raise ValueError("min_version is above max_version")
        return self

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        """exporter-toolkit's rule: a client CA without an auth type means require and verify."""
        auth = self.client_auth_type
        if auth is None:
            auth = "RequireAndVerifyClientCert" if self.client_ca_file else "NoClientCert"
        return _VERIFY_MODES[auth]


class HttpServerConfig(Model):
    """`http_server_config`: extra response headers (exporter-toolkit's allowed set)."""

    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _allowed(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if name.lower() not in _ALLOWED_HEADERS:
                allowed = ", ".join(sorted(_ALLOWED_HEADERS.values()))
                raise ValueError(f"header {name!r} cannot be set; allowed: {allowed}")
        return {_ALLOWED_HEADERS[name.lower()]: value for name, value in headers.items()}


class WebConfigFile(Model):
    """The whole web config file."""

    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = Field(default_factory=HttpServerConfig)
    basic_auth_users: dict[str, BcryptHash] = Field(default_factory=dict)

    @field_validator("basic_auth_users")
    @classmethod
    def _user_names(cls, users: dict[str, str]) -> dict[str, str]:
        for user in users:
            if not user or ":" in user:
                raise ValueError(f"user name {user!r} must be non-empty and without ':'")
        return users


@dataclass(frozen=True)
class WebConfig:
    """A loaded web config: what the middleware and the listener need."""

    file: str
    tls: TlsServerConfig | None
    ssl_context: ssl.SSLContext | None
    users: Mapping[str, bytes]
    headers: Mapping[str, str]
    # What an unknown user's password is checked against: a hash of the configured users'
    # (highest) cost, so a wrong user takes as long as a wrong password.
    dummy_hash: bytes = b""


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate the web config and load its certificates; raise a located ConfigError."""
    doc = read_document(Path(path))
    try:
        parsed = WebConfigFile.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(validation_issues(exc, doc)) from None
    context = None
    if parsed.tls_server_config is not None:
        context = _ssl_context(parsed.tls_server_config, Path(path).parent, doc.issue)
    users = {user: hashed.encode() for user, hashed in parsed.basic_auth_users.items()}
    return WebConfig(
        file=str(path),
        tls=parsed.tls_server_config,
        ssl_context=context,
        users=users,
        headers=dict(parsed.http_server_config.headers),
        dummy_hash=_dummy_hash(users),
    )


def _dummy_hash(users: Mapping[str, bytes]) -> bytes:
    """A hash of a random password at the highest cost among `users` (b"" without users)."""
    costs = [int(hashed[4:6]) for hashed in users.values()]
    if not costs:
        return b""
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(max(costs)))


def _ssl_context(
    tls: TlsServerConfig, base: Path, issue: Callable[[KeyPath, str], ConfigIssue]
) -> ssl.SSLContext:
    files = {"cert_file": tls.cert_file, "key_file": tls.key_file}
    if tls.client_ca_file is not None:
        files["client_ca_file"] = tls.client_ca_file
    for key, file in files.items():
        try:
            read_bounded(base / file, MAX_CONFIG_BYTES)  # a FIFO here would hang the load
        except OSError as exc:
            where = ("tls_server_config", key)
            raise ConfigError([issue(where, f"cannot read file: {exc.strerror}")]) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    key = "cert_file"
    try:
        context.load_cert_chain(base / tls.cert_file, base / tls.key_file)
        if tls.client_ca_file is not None:
            key = "client_ca_file"
            context.load_verify_locations(base / tls.client_ca_file)
    except ssl.SSLError as exc:
        reason = exc.reason or "not PEM, or the certificate and key do not match"
        raise ConfigError([issue(("tls_server_config", key), f"cannot load: {reason}")]) from None
    context.verify_mode = tls.verify_mode
    _choose_algorithms(context, tls, issue)
    return context


def _choose_algorithms(
    context: ssl.SSLContext,
    tls: TlsServerConfig,
    issue: Callable[[KeyPath, str], ConfigIssue],
) -> None:
    """Apply cipher_suites, prefer_server_cipher_suites and curve_preferences (see CONFIG.md)."""
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    suites = [name for name in (_CIPHER_SUITES[s] for s in tls.cipher_suites) if name]
    if suites:
        try:
            context.set_ciphers(":".join(suites))
        except ssl.SSLError:
            where = ("tls_server_config", "cipher_suites")
            raise ConfigError(
                [issue(where, "none of these is available in this OpenSSL")]
            ) from None
    if tls.curve_preferences:
        # Python's ssl offers one group only: the first, most preferred curve.
        context.set_ecdh_curve(_CURVES[tls.curve_preferences[0]])
        if len(tls.curve_preferences) > 1:
            log.warning(
                "web config: curve_preferences: Python's ssl offers one curve only",
                extra={"offered": tls.curve_preferences[0]},
            )


class WebSecurity:
    """The live web config: swapped on reload, read by the middleware on every request.

    A reload applies new users and headers at once, and new certificate and key files to
    every new TLS connection: the listener's context hands each handshake to the current
    config's context (its SNI callback runs for every ClientHello, with or without SNI), so
    a certificate rotates atomically without a restart. Turning TLS on or off, or changing
    client auth or versions, takes a restart.
    """

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.ssl_context = config.ssl_context
        if self.ssl_context is not None:
            self.ssl_context.sni_callback = self._use_current_context
        self._verified: dict[str, bytes] = {}
        self._bcrypt_slots = asyncio.Semaphore(_BCRYPT_SLOTS)

    def _use_current_context(
        self, connection: ssl.SSLObject, _server_name: str | None, _listener: ssl.SSLContext
    ) -> None:
        current = self.config.ssl_context
        if current is not None and current is not connection.context:
            connection.context = current

    async def reload(self) -> None:
        """Load the file again; on error log it, keep the running config and raise."""
        try:
            config = await load_off_loop(
                partial(load_web_config, self.config.file), self.config.file
            )
        except ConfigError as exc:
            log.error(
                "web config reload failed, keeping the running one", extra={"errors": str(exc)}
            )
            raise
        if _restart_needed(self.config.tls, config.tls):
            log.warning("web config: TLS on/off, client auth and versions change on restart only")
        self.config = config
        self._verified = {u: d for u, d in self._verified.items() if u in config.users}
        log.info("web config reloaded", extra={"users": len(config.users)})

    async def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header carries a configured user's password."""
        credentials = _basic_credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = _find_user(self.config.users, user)
        digest = hashlib.sha256(b"\0".join((user.encode(), password, hashed or b"")))
        cached = self._verified.get(user)
        if (
            hashed is not None
            and cached is not None
            and hmac.compare_digest(cached, digest.digest())
        ):
            return True
        async with self._bcrypt_slots:
            ok = await asyncio.to_thread(
                _bcrypt_matches, password, hashed or self.config.dummy_hash
            )
        if ok and hashed is not None:
            self._verified[user] = digest.digest()
            return True
        return False


def _find_user(users: Mapping[str, bytes], name: str) -> bytes | None:
    """The user's hash, compared against every user without stopping at a match: how long
    the lookup takes does not say whether, or which, user exists."""
    wanted = hashlib.sha256(name.encode()).digest()
    found = None
    for user, hashed in users.items():
        if hmac.compare_digest(hashlib.sha256(user.encode()).digest(), wanted):
            found = hashed
    return found


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    """(user, password bytes as sent) from `Authorization: Basic ...`, or None."""
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        name = user.decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (name, password) if sep else None


def _restart_needed(old: TlsServerConfig | None, new: TlsServerConfig | None) -> bool:
    if old is None or new is None:
        return old is not new
    return old.model_copy(update={"cert_file": "", "key_file": ""}) != new.model_copy(
        update={"cert_file": "", "key_file": ""}
    )


def _bcrypt_matches(password: bytes, hashed: bytes) -> bool:
    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:  # bcrypt 5 refuses passwords over 72 bytes
        return False


def security_middleware(security: WebSecurity) -> Middleware:
    """Basic auth on every path but the liveness ones (headers: `build_app(response_headers)`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            security.config.users
            and request.path not in OPEN_PATHS
            and not await security.authorized(request.headers.get(aiohttp.hdrs.AUTHORIZATION))
        ):
            return web.Response(
                status=401,
                text="Unauthorized\n",
                headers={aiohttp.hdrs.WWW_AUTHENTICATE: f'Basic realm="{REALM}", charset="UTF-8"'},
            )
        return await handler(request)

    return middleware

"""TLS and basic auth on the web endpoints, from an exporter-toolkit web config, over loopback."""

from __future__ import annotations

import asyncio
import base64
import signal
import ssl
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from prober.config.located import ConfigError
from prober.engine.daemon import Daemon
from prober.web import auth as webconfig
from prober.web.app import build_app
from prober.web.auth import WebSecurity, load_web_config, security_middleware
from prober.web.server import start_web
from tests.support.certs import CertFactory
from tests.support.checks import WriteConfig
from tests.support.processes import read_base_url, spawn_prober, wait_for
from tests.support.servers import Target

PASSWORD = "s3cret-Scrape-pa55"
CONFIG = """
interval: 0.5s
timeout: 0.3s
checks:
  - {name: good, kind: http, component: api, url: "${URL}/ok"}
"""


def basic_auth(user: str, password: str) -> str:
    """An Authorization header value (aiohttp.BasicAuth is deprecated in aiohttp 3.14)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def bcrypt_hash(password: str) -> str:
    """Cost 4: the cheapest bcrypt, so the suite stays fast; production hashes use 10+."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path

    def client_context(self, with_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    factory = CertFactory(tmp_path_factory.mktemp("pki"))
    server = factory.issue(("127.0.0.1",))
    client = factory.issue(("prometheus",))
    return Pki(factory.ca_file, server.cert, server.key, client.cert, client.key)


WriteWebConfig = Callable[[str], Path]


@pytest.fixture
def write_web_config(tmp_path: Path) -> WriteWebConfig:
    def write(text: str) -> Path:
        path = tmp_path / "web.yml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


class Served:
    def __init__(self, base: str, security: WebSecurity | None = None) -> None:
        self.base = base
        self._security = security

    @property
    def security(self) -> WebSecurity:
        assert self._security is not None
        return self._security

    async def get(
        self,
        path: str,
        auth: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> tuple[int, str, dict[str, str]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                self.base + path,
                ssl=ssl_context if ssl_context is not None else True,
                headers={"Authorization": auth} if auth else {},
            ) as resp,
        ):
            return resp.status, await resp.text(), dict(resp.headers)


ServeWith = Callable[[Path], Awaitable[Served]]


@pytest.fixture
async def serve_with(
    target: Target, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ServeWith]:
    """Start a daemon and its web app with the given web config; stop both afterwards."""
    monkeypatch.setenv("URL", target.url)
    daemon = Daemon(write_config(CONFIG))
    await daemon.start()
    runners = []

    async def start(web_config: Path) -> Served:
        security = WebSecurity(load_web_config(web_config))
        app = build_app(
            daemon.metrics,
            daemon,
            middlewares=[security_middleware(security)],
            response_headers=lambda: security.config.headers,
        )
        runner = await start_web(app, "127.0.0.1", 0, security.ssl_context)
        runners.append(runner)
        scheme = "https" if security.ssl_context else "http"
        return Served(f"{scheme}://127.0.0.1:{runner.port}", security)

    yield start
    for runner in runners:
        await runner.cleanup()
    await daemon.stop()


@pytest.mark.parametrize(
    "auth",
    [
        None,
        basic_auth("prometheus", "wrong-password"),
        basic_auth("nobody", PASSWORD),
        basic_auth("prometheus", PASSWORD + "x" * 80),
    ],
    ids=["no-credentials", "wrong-password", "unknown-user", "over-72-bytes"],
)
async def test_basic_auth_rejects_bad_credentials_with_401(
    serve_with: ServeWith,
    write_web_config: WriteWebConfig,
    auth: str | None,
) -> None:
    served: Served = await serve_with(
        write_web_config(f"basic_auth_users:\n  prometheus: {bcrypt_hash(PASSWORD)}\n")
    )
    status, body, headers = await served.get("/metrics", auth=auth)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Basic realm="prober"')
    assert "probe_success" not in body


async def test_basic_auth_accepts_the_password_and_leaves_health_open(
    serve_with: ServeWith, write_web_config: WriteWebConfig
) -> None:
    served: Served = await serve_with(
        write_web_config(f"basic_auth_users:\n  prometheus: {bcrypt_hash(PASSWORD)}\n")
    )
    auth = basic_auth("prometheus", PASSWORD)
    status, body, _ = await served.get("/metrics", auth=auth)
    assert status == 200 and "prober_build_info" in body
    assert (await served.get("/api/status", auth=auth))[0] == 200
    assert (await served.get("/api/status"))[0] == 401
    assert (await served.get("/-/healthy"))[0] == 200
    assert (await served.get("/-/ready"))[0] == 200


async def test_verified_password_is_cached_not_bcrypted_per_scrape(
    serve_with: ServeWith,
    write_web_config: WriteWebConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served: Served = await serve_with(
        write_web_config(f"basic_auth_users:\n  prometheus: {bcrypt_hash(PASSWORD)}\n")
    )
    verifications: list[bytes] = []
    real = webconfig._bcrypt_matches

    def counting(password: bytes, hashed: bytes) -> bool:
        verifications.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(webconfig, "_bcrypt_matches", counting)
    auth = basic_auth("prometheus", PASSWORD)
    for _ in range(5):
        assert (await served.get("/metrics", auth=auth))[0] == 200
    assert len(verifications) == 1
    # A wrong password is never served from the cache.
    assert (await served.get("/metrics", auth=basic_auth("prometheus", "nope")))[0] == 401
    assert len(verifications) == 2


async def test_unknown_user_costs_a_bcrypt_of_the_configured_users_cost(
    serve_with: ServeWith,
    write_web_config: WriteWebConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)).decode()
    served: Served = await serve_with(
        write_web_config(f"basic_auth_users:\n  prometheus: {hashed}\n")
    )
    checked: list[bytes] = []
    real = webconfig._bcrypt_matches

    def recording(password: bytes, against: bytes) -> bool:
        checked.append(against)
        return real(password, against)

    monkeypatch.setattr(webconfig, "_bcrypt_matches", recording)
    for user in ("prometheus", "nobody", "prometheus2", "Prometheus", ""):
        assert (await served.get("/metrics", auth=basic_auth(user, "wrong")))[0] == 401
    # Known or not, every wrong login pays one bcrypt at cost 05, never a cheaper one.
    assert [h[:7] for h in checked] == [b"$2b$05$"] * 5
    assert checked[0] == hashed.encode() and hashed.encode() not in checked[1:]


# A TLS 1.2-only server: cipher_suites apply to TLS 1.0-1.2 only (as in Go).
TLS12 = """
    tls_server_config:
      cert_file: {cert}
      key_file: {key}
      max_version: TLS12
"""


def tls12_client(pki: Pki, ciphers: str | None = None) -> ssl.SSLContext:
    context = pki.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers:
        context.set_ciphers(ciphers)
    return context


async def negotiated(base: str, context: ssl.SSLContext) -> str | None:
    """The cipher a handshake with the server settles on, None if the handshake fails."""
    port = int(base.rsplit(":", 1)[1])
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    except (ssl.SSLError, ConnectionError):
        return None
    cipher = writer.get_extra_info("cipher")[0]
    writer.close()
    return str(cipher)


AES128 = "ECDHE-ECDSA-AES128-GCM-SHA256"
AES256 = "ECDHE-ECDSA-AES256-GCM-SHA384"


@pytest.mark.parametrize(
    ("settings", "client", "expected"),
    [
        ("cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]", {}, AES256),
        ("cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]", {"ciphers": AES128}, None),
        (
            "cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]",
            {"ciphers": f"{AES256}:{AES128}"},
            AES128,
        ),
        (
            "cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\nprefer_server_cipher_suites: false",
            {"ciphers": f"{AES256}:{AES128}"},
            AES256,
        ),
    ],
    ids=["suite-chosen", "suite-not-listed", "server-order", "client-order"],
)
async def test_exporter_toolkit_tls_algorithm_keys_are_applied(
    serve_with: ServeWith,
    write_web_config: WriteWebConfig,
    pki: Pki,
    settings: str,
    client: dict[str, str],
    expected: str | None,
) -> None:
    text = TLS12.format(cert=pki.cert, key=pki.key) + textwrap.indent(settings, " " * 6)
    served: Served = await serve_with(write_web_config(text))
    assert await negotiated(served.base, tls12_client(pki, **client)) == expected


@pytest.mark.parametrize(
    ("client_curve", "served"), [("secp384r1", True), ("prime256v1", False)], ids=["listed", "not"]
)
async def test_curve_preferences_limit_the_key_exchange(
    serve_with: ServeWith,
    write_web_config: WriteWebConfig,
    pki: Pki,
    client_curve: str,
    served: bool,
) -> None:
    text = f"""
        tls_server_config:
          cert_file: {pki.cert}
          key_file: {pki.key}
          curve_preferences: [CurveP384]
    """
    base = (await serve_with(write_web_config(text))).base
    context = pki.client_context()
    context.set_ecdh_curve(client_curve)  # this client offers only that group (TLS 1.3)
    assert (await negotiated(base, context) is not None) is served


async def test_tls_with_basic_auth_on_metrics(
    serve_with: ServeWith, write_web_config: WriteWebConfig, pki: Pki
) -> None:
    served: Served = await serve_with(
        write_web_config(f"""
            tls_server_config:
              cert_file: {pki.cert}
              key_file: {pki.key}
            http_server_config:
              headers:
                strict-transport-security: max-age=31536000
            basic_auth_users:
              prometheus: {bcrypt_hash(PASSWORD)}
        """)
    )
    assert served.base.startswith("https://")
    trusted = pki.client_context()
    auth = basic_auth("prometheus", PASSWORD)
    status, body, headers = await served.get("/metrics", auth=auth, ssl_context=trusted)
    assert status == 200 and "prober_build_info" in body
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    status, _, headers = await served.get("/metrics", ssl_context=trusted)
    assert status == 401 and headers["Strict-Transport-Security"] == "max-age=31536000"
    # An unknown CA is refused by the client; plain HTTP gets no answer from a TLS port.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await served.get("/metrics", auth=auth)
    plain = Served(served.base.replace("https://", "http://"))
    with pytest.raises(aiohttp.ClientError):
        await plain.get("/metrics", auth=auth)


async def test_client_certificate_required_and_verified(
    serve_with: ServeWith, write_web_config: WriteWebConfig, pki: Pki
) -> None:
    served: Served = await serve_with(
        write_web_config(f"""
            tls_server_config:
              cert_file: {pki.cert}
              key_file: {pki.key}
              client_ca_file: {pki.ca}
              client_auth_type: RequireAndVerifyClientCert
              min_version: TLS13
        """)
    )
    status, _, _ = await served.get("/metrics", ssl_context=pki.client_context(True))
    assert status == 200
    with pytest.raises(aiohttp.ClientError):
        await served.get("/metrics", ssl_context=pki.client_context(False))


async def test_reload_rotates_passwords(
    serve_with: ServeWith, write_web_config: WriteWebConfig
) -> None:
    path = write_web_config(f"basic_auth_users:\n  prometheus: {bcrypt_hash('old-password')}\n")
    served: Served = await serve_with(path)
    old, new = (
        basic_auth("prometheus", "old-password"),
        basic_auth("prometheus", PASSWORD),
    )
    assert (await served.get("/metrics", auth=old))[0] == 200
    write_web_config(f"basic_auth_users:\n  prometheus: {bcrypt_hash(PASSWORD)}\n")
    await served.security.reload()
    assert (await served.get("/metrics", auth=old))[0] == 401
    assert (await served.get("/metrics", auth=new))[0] == 200
    # A bad file is refused and the running users stay.
    write_web_config("basic_auth_users:\n  prometheus: plain-text\n")
    with pytest.raises(ConfigError):
        await served.security.reload()
    assert (await served.get("/metrics", auth=new))[0] == 200


async def test_reload_rotates_the_certificate_without_restart(
    serve_with: ServeWith, write_web_config: WriteWebConfig, tmp_path: Path
) -> None:
    factory = CertFactory(tmp_path)
    first, second = factory.issue(("127.0.0.1",), days=30), factory.issue(("127.0.0.1",), days=5)
    cert, key = tmp_path / "web.crt", tmp_path / "web.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    served = await serve_with(
        write_web_config("tls_server_config: {cert_file: web.crt, key_file: web.key}\n")
    )
    port = int(served.base.rsplit(":", 1)[1])
    trusted = ssl.create_default_context(cafile=str(factory.ca_file))

    async def served_expiry() -> str:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusted)
        expiry = str(writer.get_extra_info("peercert")["notAfter"])
        writer.close()
        await writer.wait_closed()
        return expiry

    before = await served_expiry()
    cert.write_bytes(second.cert.read_bytes())
    key.write_bytes(second.key.read_bytes())
    assert await served_expiry() == before  # files alone change nothing until a reload
    await served.security.reload()
    after = await served_expiry()
    assert after != before
    assert ssl.cert_time_to_seconds(after) == int(second.not_after.timestamp())


TLS = "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
BAD_WEB_CONFIGS = [
    (
        "basic_auth_users:\n  prometheus: plain-text-password\n",
        "web.yml:2: basic_auth_users.prometheus: must be a bcrypt hash",
    ),
    (
        "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing-key.pem\n",
        "web.yml:2: tls_server_config.cert_file: cannot read file",
    ),
    (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {cert}\n",
        "web.yml:2: tls_server_config.cert_file: cannot load",
    ),
    (
        TLS + "  client_auth_type: RequestClientCert\n",
        "web.yml:4: tls_server_config.client_auth_type: RequestClientCert is not supported",
    ),
    (
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
        "tls_server_config: client_auth_type RequireAndVerifyClientCert needs client_ca_file",
    ),
    (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS9\n",
        "web.yml:4: tls_server_config.min_version",
    ),
    (
        "http_server_config:\n  headers:\n    X-Powered-By: prober\n",
        "web.yml:2: http_server_config.headers: header 'X-Powered-By' cannot be set",
    ),
    ("basic_auth_user: {{prometheus: x}}\n", "web.yml:1: basic_auth_user: unknown key"),
    (
        TLS + "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, AES128-SHA]\n",
        "web.yml:4: tls_server_config.cipher_suites: unknown cipher suite 'AES128-SHA'",
    ),
    (
        TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
        "web.yml:4: tls_server_config.cipher_suites: none of these is available in this OpenSSL",
    ),
    (
        TLS + "  curve_preferences: [P256]\n",
        "web.yml:4: tls_server_config.curve_preferences: unknown curve 'P256'",
    ),
    (
        "basic_auth_users:\n  prometheus: $2b$03$" + "a" * 53 + "\n",
        "web.yml:2: basic_auth_users.prometheus: bcrypt cost must be 04 to 31",
    ),
    ("basic_auth_users: [\n", "web.yml:2: invalid YAML"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    BAD_WEB_CONFIGS,
    ids=[
        "plain-password",
        "missing-cert",
        "cert-as-key",
        "unsupported-client-auth",
        "verify-without-ca",
        "bad-tls-version",
        "header-not-allowed",
        "unknown-key",
        "unknown-cipher-suite",
        "unavailable-cipher-suite",
        "unknown-curve",
        "bcrypt-cost-too-low",
        "invalid-yaml",
    ],
)
def test_bad_web_config_is_a_located_error(
    write_web_config: WriteWebConfig, pki: Pki, text: str, expected: str
) -> None:
    path = write_web_config(text.format(cert=pki.cert, key=pki.key))
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert expected in str(caught.value)
    assert "plain-text-password" not in str(caught.value)


async def test_cli_bad_web_config_exits_1_with_located_error(
    write_config: WriteConfig, write_web_config: WriteWebConfig, tmp_path: Path
) -> None:
    config = write_config(CONFIG.replace("${URL}", "http://127.0.0.1:9"))
    web = write_web_config("basic_auth_users:\n  prometheus: hunter2-plain\n")
    process = await spawn_prober(
        "run",
        "--config.file",
        str(config),
        "--web.config.file",
        str(web),
        "--web.listen-address",
        "127.0.0.1:0",
        cwd=tmp_path,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    stderr = err.decode()
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert f"{web}:2: basic_auth_users.prometheus: must be a bcrypt hash" in stderr
    assert "hunter2-plain" not in stderr + out.decode()


async def test_cli_serves_tls_and_basic_auth_and_sighup_rotates_the_password(
    target: Target,
    write_config: WriteConfig,
    write_web_config: WriteWebConfig,
    pki: Pki,
) -> None:
    config = write_config(CONFIG.replace("${URL}", target.url))
    web = write_web_config(f"""
        tls_server_config: {{cert_file: {pki.cert}, key_file: {pki.key}}}
        basic_auth_users: {{prometheus: "{bcrypt_hash(PASSWORD)}"}}
    """)
    process = await spawn_prober(
        "run",
        "--config.file",
        str(config),
        "--web.config.file",
        str(web),
        "--web.listen-address",
        "127.0.0.1:0",
    )
    try:
        base = await read_base_url(process, "https")
        assert base.startswith("https://127.0.0.1:"), base
        served = Served(base)
        trusted = pki.client_context()
        auth = basic_auth("prometheus", PASSWORD)

        async def scraped() -> bool:
            status, body, _ = await served.get("/metrics", auth=auth, ssl_context=trusted)
            return status == 200 and 'probe_success{check="good"' in body

        await wait_for(scraped, limit=15)
        assert (await served.get("/metrics", ssl_context=trusted))[0] == 401
        # The container HEALTHCHECK finds the daemon over TLS too, without credentials.
        health = await spawn_prober("healthcheck", "--web.listen-address", base.split("//")[1])
        assert await asyncio.wait_for(health.wait(), timeout=30) == 0

        write_web_config(f"""
            tls_server_config: {{cert_file: {pki.cert}, key_file: {pki.key}}}
            basic_auth_users: {{prometheus: "{bcrypt_hash("rotated-" + PASSWORD)}"}}
        """)
        process.send_signal(signal.SIGHUP)
        rotated = basic_auth("prometheus", "rotated-" + PASSWORD)

        async def accepts_rotated() -> bool:
            status, _, _ = await served.get("/metrics", auth=rotated, ssl_context=trusted)
            return status == 200

        await wait_for(accepts_rotated)
        assert (await served.get("/metrics", auth=auth, ssl_context=trusted))[0] == 401
    finally:
        process.terminate()
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    assert PASSWORD not in err.decode()

"""Issue 17, the probe side: no check may go silently wrong.

Each test runs against a real local server (aiohttp on port 0, a raw asyncio server where
aiohttp would not send the bytes needed, the daemon with its web server, or the `prober`
command as a child process).
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
from aiohttp import web

from prober.config.load import ConfigError, load_config
from prober.config.model import TcpCheck
from prober.engine.daemon import Daemon
from prober.engine.runner import run_check
from prober.probes import registry
from prober.probes.context import ProbeContext
from prober.result import HttpFacts, Outcome, Reason
from prober.sinks.log import JsonFormatter, LogfmtFormatter
from prober.web.app import build_app
from prober.web.server import start_web
from tests.support.checks import WriteConfig, facts_of, http_check, run_environment
from tests.support.processes import spawn_prober, wait_for
from tests.support.samples import parse_samples, sample_value
from tests.support.servers import serve_app

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
# Exponential for a backtracking engine: `^(a+)+$` against a run of a's that ends wrong.
CATASTROPHIC = "^(a+)+$"
CRAFTED_BODY = b"a" * 30_000 + b"!"
# A secret whose encodings all differ from it: '/', '+', '@', ' ', '&', '"' and a non-ASCII
# letter (so quote, quote_plus, JSON and Latin-1 base64 each write it differently).
SECRET = 's3cr/t+p@ss w&rd"\u00e9-canary'


@pytest.fixture
async def app_server() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Serve aiohttp apps on 127.0.0.1 port 0; all cleaned up at the end."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner, url = await serve_app(app)
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[RawHandler], Awaitable[int]]]:
    """Serve a raw asyncio handler on 127.0.0.1 port 0 (bytes aiohttp would not send)."""
    servers: list[asyncio.Server] = []

    async def start(handler: RawHandler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def _body_app(body: bytes, content_type: str = "application/json") -> web.Application:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    app = web.Application()
    app.router.add_get("/", handler)
    return app


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
        return resp.status, await resp.text()


async def _run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await spawn_prober(*args, env=env, merge_stderr=True)
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


def _cli_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}


class _Running:
    """A daemon with its web server, for tests that read /metrics and /status."""

    def __init__(self, daemon: Daemon, runner: Any) -> None:
        self.daemon = daemon
        self.base = f"http://127.0.0.1:{runner.port}"
        self._runner = runner

    @classmethod
    async def start(cls, path: Path) -> _Running:
        daemon = Daemon(path)
        await daemon.start()
        runner = await start_web(build_app(daemon.metrics, daemon), "127.0.0.1", 0)
        return cls(daemon, runner)

    def last(self, check: str) -> dict[str, Any] | None:
        """The check's entry in /api/status once it has a result, else None."""
        for entry in self.daemon.status.snapshot()["checks"]:
            if entry["name"] == check and entry["last_run"] is not None:
                return dict(entry)
        return None

    async def stop(self) -> None:
        await self._runner.cleanup()
        await self.daemon.stop()


# 1. A failing check is never reported as passing, and every run ends in a Result.


async def test_json_nested_100000_deep_fails_the_check_with_invalid_json(
    app_server: Callable[[web.Application], Awaitable[str]], write_config: WriteConfig
) -> None:
    url = await app_server(_body_app(DEEP_JSON))
    path = write_config(f"""
        interval: 1s
        timeout: 0.9s
        checks:
          - {{name: deep, kind: http, component: api, url: "{url}/", assert: ["$ exists"]}}
        """)
    running = await _Running.start(path)
    try:
        # Confirmed failing: the first failing run is confirmed by a second one at once.
        await wait_for(lambda: (running.last("deep") or {}).get("state") == "failing", limit=30)
        async with aiohttp.ClientSession() as session:
            status, text = await _get(session, running.base + "/metrics")
        assert status == 200
    finally:
        await running.stop()
    entry = running.last("deep")
    assert entry is not None
    assert (entry["state"], entry["reason"]) == ("failing", "invalid_json"), entry
    assert sample_value(parse_samples(text), "probe_success", check="deep") == 0
    # `prober probe` reports the same failure: a trace and exit code 1, no traceback.
    code, out = await _run_cli("probe", "--config.file", str(path), "deep", env=_cli_env())
    assert code == 1, out
    assert "FAILURE reason=invalid_json" in out
    assert "Traceback" not in out


async def test_probe_that_raises_is_recorded_as_internal_with_a_redacted_traceback(
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in a probe (here one injected into the http kind) fails the run, every run."""
    calls = 0

    async def buggy_probe(check: Any, ctx: ProbeContext) -> Outcome:
        nonlocal calls
        calls += 1
        ctx.recorder.begin("request")
        encoded = base64.b64encode(SECRET.encode()).decode()
        raise RuntimeError(f"bug while holding {SECRET} and {quote(SECRET, safe='')} {encoded}")

    buggy = replace(registry.KINDS["http"], run=buggy_probe)
    monkeypatch.setitem(registry.KINDS, "http", buggy)
    monkeypatch.setenv("BUG_SECRET", SECRET)
    caplog.set_level(logging.DEBUG, logger="prober")
    path = write_config("""
        interval: 0.2s
        timeout: 0.15s
        secrets: {token: {env: BUG_SECRET}}
        checks:
          - name: buggy
            kind: http
            component: api
            url: http://127.0.0.1:9/
            headers: {X-Token: "${token}"}
        """)
    running = await _Running.start(path)
    try:
        await wait_for(lambda: calls >= 3, limit=30)
    finally:
        await running.stop()
    entry = running.last("buggy")
    assert entry is not None
    assert entry["reason"] == "internal"
    assert entry["message"] == "internal error: RuntimeError"
    assert entry["failed_step"] == "request"
    samples = parse_samples(running.daemon.metrics.render().decode())
    assert sample_value(samples, "probe_success", check="buggy") == 0
    failures = sample_value(
        samples, "prober_check_failures_total", check="buggy", reason="internal"
    )
    assert failures is not None and failures >= 2
    # The traceback is logged once at error level (later runs at debug), secrets hidden.
    records = [r for r in caplog.records if getattr(r, "exception", "") == "RuntimeError"]
    assert [r.levelno for r in records].count(logging.ERROR) == 1
    assert len(records) >= 2
    for record in records:
        for text in (JsonFormatter().format(record), LogfmtFormatter().format(record)):
            assert "Traceback" in text and "buggy_probe" in text
            assert SECRET not in text and quote(SECRET, safe="") not in text
            assert base64.b64encode(SECRET.encode()).decode() not in text
            assert "***" in text


# 3. Linear-time matching for every user regex.


async def test_catastrophic_body_regex_is_judged_and_metrics_stay_responsive(
    app_server: Callable[[web.Application], Awaitable[str]], write_config: WriteConfig
) -> None:
    url = await app_server(_body_app(CRAFTED_BODY, "text/plain"))
    path = write_config(f"""
        interval: 1s
        timeout: 0.9s
        checks:
          - name: redos
            kind: http
            component: api
            url: "{url}/"
            assert: ['body ~= "{CATASTROPHIC}"']
        """)
    running = await _Running.start(path)
    try:
        await wait_for(lambda: running.last("redos") is not None, limit=30)
        async with aiohttp.ClientSession() as session:
            for _ in range(5):  # scrapes while the check keeps running beside them
                status, text = await _get(session, running.base + "/metrics")
                assert status == 200 and 'check="redos"' in text
        samples = parse_samples(text)
        runs = sample_value(samples, "prober_check_runs_total", check="redos", result="failure")
    finally:
        await running.stop()
    entry = running.last("redos")
    assert entry is not None
    assert entry["reason"] == "assertion", entry
    assert entry["message"].startswith(f'assertion failed: body ~= "{CATASTROPHIC}"')
    assert runs is not None and runs >= 1


async def test_catastrophic_extraction_and_tcp_expect_regexes_are_judged(
    app_server: Callable[[web.Application], Awaitable[str]],
    raw_server: Callable[[RawHandler], Awaitable[int]],
) -> None:
    url = await app_server(_body_app(CRAFTED_BODY, "text/plain"))

    async def long_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CRAFTED_BODY + b"\n")
        await writer.drain()
        writer.close()

    port = await raw_server(long_line)
    extraction = http_check(
        f"{url}/", extract={"run": {"regex": "^((a+)+)$"}}, timeout=5.0, interval=10.0
    )
    tcp = TcpCheck.model_validate(
        {
            "name": "tcp",
            "kind": "tcp",
            "component": "api",
            "target": f"127.0.0.1:{port}",
            "expect": [CATASTROPHIC],
            "interval": 10.0,
            "timeout": 5.0,
        }
    )
    async with run_environment() as env:
        extracted, expected = await asyncio.gather(run_check(extraction, env), run_check(tcp, env))
    assert (extracted.reason, extracted.message) == (Reason.ASSERTION, "could not extract 'run'")
    assert expected.reason == Reason.ASSERTION
    assert "connection closed before a line matched" in expected.message


@pytest.mark.parametrize(
    ("where", "pattern", "why"),
    [
        ("assert", "(a)\\\\1", "backreferences"),
        ("assert", "(?=a)a", "lookahead"),
        ("extract", "(?<=a)(b)", "lookbehind"),
        ("tcp-expect", "(?!x)y", "negative lookahead"),
        ("dns-answer", "(?P<x>a)(?P=x)", "backreferences"),
    ],
    ids=[
        "assert-backref",
        "assert-lookahead",
        "extract-lookbehind",
        "tcp-lookahead",
        "dns-backref",
    ],
)
def test_regex_re2_cannot_run_is_a_located_config_error(
    write_config: WriteConfig, where: str, pattern: str, why: str
) -> None:
    checks = {
        "assert": f"""
          - name: c
            kind: http
            component: api
            url: http://127.0.0.1:9/
            assert:
              - 'body ~= "{pattern}"'""",
        "extract": f"""
          - name: c
            kind: http
            component: api
            url: http://127.0.0.1:9/
            extract:
              v: {{regex: '{pattern}'}}""",
        "tcp-expect": f"""
          - name: c
            kind: tcp
            component: api
            target: 127.0.0.1:9
            expect: ['{pattern}']""",
        "dns-answer": f"""
          - name: c
            kind: dns
            component: api
            query_name: example.test
            answer_regex: ['{pattern}']""",
    }[where]
    path = write_config("checks:" + checks + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (issue,) = caught.value.issues
    assert issue.line is not None and issue.line >= 6, issue
    assert issue.check == "c"
    assert why in issue.message and "not supported" in issue.message, issue.message
    assert str(issue).startswith(f"{path}:{issue.line}: check 'c': ")


# 4. A URL that does not parse fails the run; values are percent-encoded where they land.


def _echo_app(seen: list[web.Request]) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response(
            {
                "segment": request.match_info["segment"],
                "query": {k: request.query.getall(k) for k in request.query},
                "authorization": request.headers.get("Authorization", ""),
            }
        )

    app = web.Application()
    app.router.add_get("/seg/{segment}", echo)
    return app


async def test_url_values_are_percent_encoded_and_a_bad_port_fails_every_run(
    app_server: Callable[[web.Application], Awaitable[str]],
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[web.Request] = []
    url = await app_server(_echo_app(seen))
    hostport = url.removeprefix("http://")
    password = "pa/ss:w@rd"  # a '/' in the userinfo made the port unparsable
    monkeypatch.setenv("PASSWORD", password)
    monkeypatch.setenv("VALUE", "a&b=c/d e")
    monkeypatch.setenv("BAD_PORT", "99999")
    path = write_config(f"""
        interval: 1s
        timeout: 0.9s
        secrets: {{password: {{env: PASSWORD}}}}
        checks:
          - name: encoded
            kind: http
            component: api
            url: "http://user:${{password}}@{hostport}/seg/${{VALUE}}?q=${{VALUE}}&r=1"
            assert:
              - '$.segment == "a&b=c/d e"'
              - '$.query.q[0] == "a&b=c/d e"'
              - '$.query.r[0] == "1"'
          - name: bad-port
            kind: http
            component: api
            url: "http://user:${{password}}@127.0.0.1:${{BAD_PORT}}/"
        """)
    running = await _Running.start(path)
    try:

        def bad_port_runs() -> float:
            samples = parse_samples(running.daemon.metrics.render().decode())
            runs = sample_value(
                samples, "prober_check_runs_total", check="bad-port", result="failure"
            )
            return runs or 0.0

        def encoded_passed() -> bool:
            entry = running.last("encoded")
            return entry is not None and True in entry["history"]  # its assertions held

        await wait_for(lambda: bad_port_runs() >= 2 and encoded_passed(), limit=30)
    finally:
        await running.stop()
    expected = base64.b64encode(f"user:{password}".encode()).decode()
    assert seen[0].headers["Authorization"] == f"Basic {expected}"
    bad = running.last("bad-port")
    assert bad is not None
    assert bad["reason"] == "invalid_url"
    assert bad["message"] == "invalid url: the port is not a number from 1 to 65535"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:99999/", "http://127.0.0.1:port/", "http://user:${pw}@127.0.0.1:0/x"],
    ids=["out-of-range", "not-a-number", "zero-after-userinfo"],
)
def test_literal_bad_port_is_a_located_config_error(write_config: WriteConfig, url: str) -> None:
    path = write_config(f"""
        secrets: {{pw: {{env: NOPE, default: x}}}}
        checks:
          - name: c
            kind: http
            component: api
            url: "{url}"
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    (issue,) = caught.value.issues
    assert (issue.line, issue.check, issue.key) == (7, "c", "checks[0].url"), issue
    assert issue.message == "the URL's port is not a number from 1 to 65535"


# 5. Secrets are hidden in every encoding, everywhere output goes.


def _forms_of(secret: str) -> dict[str, str]:
    """The encodings a target or aiohttp may show a secret in."""
    return {
        "raw": secret,
        "quote": quote(secret, safe=""),
        "quote-slash": quote(secret),
        "quote-plus": quote_plus(secret),
        "base64": base64.b64encode(secret.encode()).decode(),
        "basic-latin1": base64.b64encode(f"user:{secret}".encode("latin-1")).decode(),
        "basic-utf8": base64.b64encode(f"user:{secret}".encode()).decode(),
        "json": json.dumps(secret)[1:-1],
        "json-unicode": json.dumps(secret, ensure_ascii=False)[1:-1],
        "html": html.escape(secret),
        "prefix": secret[:6],
    }


def _reflect_app() -> web.Application:
    async def reflect(request: web.Request) -> web.Response:
        key = request.headers.get("X-Key", "")
        return web.json_response(
            {
                "raw": key,
                "quoted": quote(key, safe=""),
                "quoted_slash": quote(key),
                "plus": quote_plus(key),
                "b64": base64.b64encode(key.encode()).decode(),
                "auth": request.headers.get("Authorization", ""),
                "qs": request.rel_url.raw_query_string,
                "nested": {"k": key},
                "long": "x" * 58 + key,
            }
        )

    app = web.Application()
    app.router.add_get("/reflect", reflect)
    return app


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Not HTTP: aiohttp's error quotes the whole request URL, query string included."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"\x00\x01garbage\r\n\r\n")
    await writer.drain()
    writer.close()


async def test_secret_is_hidden_in_every_encoding_in_every_output(
    app_server: Callable[[web.Application], Awaitable[str]],
    raw_server: Callable[[RawHandler], Awaitable[int]],
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = await app_server(_reflect_app())
    garbage = await raw_server(_garbage)
    hostport = url.removeprefix("http://")
    monkeypatch.setenv("KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    fields = ("raw", "quoted", "quoted_slash", "plus", "b64", "auth", "qs", "nested", "long")
    asserts = "\n".join(f"              - '$.{f} == 1'" for f in fields)
    path = write_config(f"""
        interval: 1s
        timeout: 0.9s
        secrets: {{key: {{env: KEY}}}}
        checks:
          - name: reflect
            kind: http
            component: api
            url: "http://user:${{key}}@{hostport}/reflect?token=${{key}}"
            headers: {{X-Key: "${{key}}"}}
            assert:
{asserts}
          - name: garbage
            kind: http
            component: api
            url: "http://127.0.0.1:{garbage}/x?token=${{key}}&page=2"
        """)
    running = await _Running.start(path)
    outputs: list[str] = []
    try:
        await wait_for(lambda: running.last("reflect") and running.last("garbage"), limit=30)
        async with aiohttp.ClientSession() as session:
            for endpoint in ("/metrics", "/api/status", "/status"):
                status, text = await _get(session, running.base + endpoint)
                assert status == 200
                outputs.append(text)
    finally:
        await running.stop()
    for check in ("reflect", "garbage"):
        _, out = await _run_cli(
            "probe", "--config.file", str(path), check, env=_cli_env(KEY=SECRET)
        )
        outputs.append(out)
    records = [r for r in caplog.records if r.name.startswith("prober")]
    outputs += [JsonFormatter().format(r) for r in records]
    outputs += [LogfmtFormatter().format(r) for r in records]
    everything = "\n".join(outputs)
    # The sweep saw the reflected values and the error that quotes the URL.
    assert "(actual Basic dXNlcjp" in everything  # the user part of the credential
    assert '(actual {"k": "***"})' in everything and "(actual xxxxxxxx" in everything
    assert "token=***&page=***" in everything  # aiohttp's error, query values hidden
    for name, form in _forms_of(SECRET).items():
        assert form not in everything, f"the secret leaked as {name}: {form}"


# 6. Bytes at the edges.


async def test_non_utf8_env_value_in_a_label_is_refused_and_scrapes_go_on(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    good = write_config("""
        labels: {region: "${REGION:-eu}"}
        checks:
          - {name: a, kind: http, component: api, url: "http://127.0.0.1:9/"}
        """)
    running = await _Running.start(good)
    try:
        # What os.environ holds for the bytes b"caf\xe9" (surrogateescape).
        monkeypatch.setenv("REGION", os.fsdecode(b"caf\xe9"))
        with pytest.raises(ConfigError) as caught:
            await running.daemon.reload()
        async with aiohttp.ClientSession() as session:
            status, text = await _get(session, running.base + "/metrics")
    finally:
        await running.stop()
    (issue,) = caught.value.issues
    assert issue.line == 2 and issue.key == "labels", issue
    assert "label 'region': the value is not valid UTF-8 text" in issue.message
    assert status == 200 and 'region="eu"' in text
    # `prober validate` says the same from the real environment's bytes, with no traceback.
    env = {b"PATH": os.environb.get(b"PATH", b"/usr/bin:/bin"), b"REGION": b"caf\xe9"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "prober",
        "validate",
        "--config.file",
        str(good),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1, out
    assert f"{good}:2: labels: label 'region': the value is not valid UTF-8 text" in out.decode()
    assert b"Traceback" not in out


async def test_latin1_response_header_is_decoded_and_status_pages_answer(
    raw_server: Callable[[RawHandler], Awaitable[int]], write_config: WriteConfig
) -> None:
    async def latin1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    port = await raw_server(latin1)
    path = write_config(f"""
        interval: 1s
        timeout: 0.9s
        checks:
          - name: latin1-pass
            kind: http
            component: api
            url: "http://127.0.0.1:{port}/"
            assert: ['header.x-name == "caf\u00e9"']
          - name: latin1-fail
            kind: http
            component: api
            url: "http://127.0.0.1:{port}/"
            assert: ['header.x-name ~= "^tea"']
        """)
    running = await _Running.start(path)
    try:
        await wait_for(lambda: running.last("latin1-pass") and running.last("latin1-fail"))
        async with aiohttp.ClientSession() as session:
            pages = {e: await _get(session, running.base + e) for e in ("/status", "/api/status")}
    finally:
        await running.stop()
    assert {e: s for e, (s, _) in pages.items()} == {"/status": 200, "/api/status": 200}
    passed, failed = running.last("latin1-pass"), running.last("latin1-fail")
    assert passed is not None and passed["state"] == "ok", passed
    assert failed is not None and failed["message"].endswith("(actual caf\u00e9)"), failed
    assert "(actual caf\u00e9)" in pages["/status"][1]


# 10 (part). Credentials stay at their origin on a redirect.


def _recording_app(seen: list[dict[str, str]]) -> web.Application:
    async def landing(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text="landed")

    app = web.Application()
    app.router.add_get("/landing", landing)
    return app


def _add_redirect(app: web.Application, target: list[str]) -> web.Application:
    """`app` with `/start` redirecting to target[0]."""

    async def start(_: web.Request) -> web.Response:
        raise web.HTTPFound(target[0])

    app.router.add_get("/start", start)
    return app


@pytest.mark.parametrize("cross_origin", [True, False], ids=["other-origin", "same-origin"])
async def test_only_headers_marked_safe_follow_a_redirect_to_another_origin(
    app_server: Callable[[web.Application], Awaitable[str]], cross_origin: bool
) -> None:
    seen: list[dict[str, str]] = []
    target: list[str] = []
    landing_app = _recording_app(seen)
    if cross_origin:
        landing_url = await app_server(landing_app)
        start_url = await app_server(_add_redirect(web.Application(), target))
    else:  # one server, one origin: the same headers must still arrive
        landing_url = start_url = await app_server(_add_redirect(landing_app, target))
    target.append(f"{landing_url}/landing")
    check = http_check(
        f"{start_url}/start",
        headers={
            "X-Api-Key": "key-canary-1",
            "X-Trace": "trace-1",
            "Authorization": "Bearer bearer-canary-2",
            "Cookie": "session=cookie-canary-3",
            "Accept": "text/plain",
        },
        redirect_headers=["X-Trace"],
        hostname="start.test",
    )
    async with run_environment() as env:
        result = await run_check(check, env)
    assert result.success, result.message
    assert facts_of(result.steps[0], HttpFacts).redirects == 1
    (landed,) = seen
    assert landed["X-Trace"] == "trace-1" and landed["Accept"] == "text/plain"
    sent = {name: name in landed for name in ("X-Api-Key", "Authorization", "Cookie")}
    assert sent == dict.fromkeys(sent, not cross_origin), landed
    # The Host that `hostname` set is the first origin's; another origin gets its own.
    own_host = landing_url.removeprefix("http://")
    assert landed["Host"] == (own_host if cross_origin else "start.test")


@pytest.mark.parametrize("header", ["Authorization", "cookie", "Proxy-Authorization", "Host"])
def test_credential_headers_cannot_be_marked_safe_for_redirects(
    write_config: WriteConfig, header: str
) -> None:
    path = write_config(f"""
        checks:
          - name: c
            kind: http
            component: api
            url: http://127.0.0.1:9/
            redirect_headers: [X-Trace, {header}]
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (issue,) = caught.value.issues
    assert issue.key == "checks[0].redirect_headers" and issue.line == 7, issue
    assert issue.message == f"{header} never follows a redirect to another origin"

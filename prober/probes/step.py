"""Run one HTTP request, time its phases, judge its response: used by both http and flow."""

from __future__ import annotations

import asyncio
import errno
import json
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http.cookies import SimpleCookie
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from prober.config.assertions import Response
from prober.config.model import NEVER_REDIRECTED, Extraction, RequestSpec
from prober.config.secrets import REDACTED
from prober.config.templates import MISSING, TemplateError, TemplateValues
from prober.probes.context import (
    PhaseTimer,
    ProbeContext,
    RequestBody,
    family_mismatch,
    out_of_descriptors,
)
from prober.probes.net.tls import (
    PeerFacts,
    TlsSetupError,
    collect_handshakes,
    peer_facts,
    tls_reason,
)
from prober.result import AssertionOutcome, Phases, Reason, StepResult

_SHOWN_VALUE_CHARS = 48
# A URL inside an exception's text (aiohttp quotes the whole URL, query and userinfo too).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# Standard headers that carry no credential and follow a redirect to any origin.
_FOLLOW_ANYWHERE = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "content-type",
        "content-language",
        "user-agent",
    }
)


class _BodyTooLarge(Exception):
    pass


class _InvalidUrl(Exception):
    """A rendered URL that cannot be requested; the message never quotes the URL."""


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """A step's result plus the variables it extracted (raw: they feed later requests).

    The secret ones among them were added to the run's redactor (`ctx.redactor`).
    """

    result: StepResult
    variables: dict[str, str]


def display_url(url: str) -> str:
    """The URL without userinfo and with query values hidden: safe for logs and traces."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid url>"
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if port is not None:
        netloc += f":{port}"
    query = "&".join(f"{p.split('=', 1)[0]}={REDACTED}" for p in parts.query.split("&") if p)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True, slots=True)
class _Request:
    url: str
    headers: dict[str, str]
    data: bytes | None
    proxy: str | None


def _build_request(spec: RequestSpec, values: TemplateValues) -> _Request:
    """Render the request; a value that is not UTF-8 text is a TemplateError."""
    url = spec.url.render(values)
    headers = {name: t.render(values) for name, t in spec.headers.items()}
    data: bytes | None = None
    try:
        for text in (url, *headers.values()):
            text.encode()
        if spec.body is not None:
            data = spec.body.render(values).encode()
        elif spec.json_body is not None:
            data = json.dumps(spec.json_body.render(values)).encode()
            headers.setdefault("Content-Type", "application/json")
    except UnicodeEncodeError:
        raise TemplateError("a value used in the request is not valid UTF-8 text") from None
    if spec.hostname:
        headers["Host"] = spec.hostname
    proxy = spec.proxy_url.render(values) if spec.proxy_url is not None else None
    return _Request(url, headers, data, proxy)


def _check_url(url: str, what: str) -> None:
    """Raise _InvalidUrl unless `url` is http(s) with a host and a port that parses."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        part = (
            "port is not a number from 1 to 65535"
            if "port" in str(exc).lower()
            else "host is not valid"
        )
        raise _InvalidUrl(f"invalid {what}: the {part}") from None
    if port == 0:
        raise _InvalidUrl(f"invalid {what}: the port is not a number from 1 to 65535")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _InvalidUrl(f"invalid {what}: it needs http:// or https:// and a host")


def _error_message(exc: BaseException) -> str:
    """An exception as text with every URL in it shown as display_url shows it."""
    text = f"{type(exc).__name__}: {exc}"
    return _URL_IN_TEXT.sub(lambda match: display_url(match.group(0)), text)


def _header_text(value: str) -> str:
    """A response header value as text: UTF-8 if its bytes are UTF-8, else Latin-1.

    aiohttp decodes header bytes as UTF-8 with surrogateescape; a Latin-1 value would keep
    lone surrogates that no page or log can encode.
    """
    if value.isascii():
        return value
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > cap:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _status_expected(status: int, expected: list[int | str]) -> bool:
    for item in expected:
        if isinstance(item, int):
            if status == item:
                return True
        elif status // 100 == int(item[0]):
            return True
    return False


def _classify(exc: BaseException) -> Reason:
    """Map an aiohttp/OS failure to a bounded reason."""
    if out_of_descriptors(exc):
        return Reason.RESOURCE
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return tls_reason(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return tls_reason(exc)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Reason.DNS
    if isinstance(exc, aiohttp.ClientConnectorError):
        if exc.os_error.errno == errno.ECONNREFUSED:
            return Reason.CONNECT_REFUSED
        return Reason.CONNECT_ERROR
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return Reason.RESET
    if isinstance(exc, aiohttp.ClientOSError):
        return Reason.RESET if exc.errno in (errno.ECONNRESET, errno.EPIPE) else Reason.ERROR
    if isinstance(
        exc, aiohttp.TooManyRedirects | aiohttp.ClientResponseError | aiohttp.ClientPayloadError
    ):
        return Reason.PROTOCOL
    return Reason.ERROR


def _extract(rule: Extraction, response: Response, cookies: SimpleCookie) -> str | None:
    if rule.json_path is not None:
        found = rule.json_path.find(response.document)
        if found is MISSING or found is None:
            return None
        return found if isinstance(found, str) else json.dumps(found)
    if rule.header is not None:
        return response.headers.get(rule.header.lower())
    if rule.cookie is not None:
        morsel = cookies.get(rule.cookie)
        return morsel.value if morsel is not None else None
    assert rule.regex is not None
    return rule.regex.first_group(response.body.decode("utf-8", "replace"))


class _Step:
    """State of one request while it runs; turned into a StepResult at the end."""

    def __init__(self, name: str, spec: RequestSpec, ctx: ProbeContext, critical: bool) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.critical = critical
        self.timer = PhaseTimer(time.perf_counter())
        self.headers_at = 0.0
        self.end = 0.0
        self.status: int | None = None
        self.request_line: str = spec.method
        self.tls_expiry: float | None = None
        self.tls_version: str | None = None
        self.http_version: str | None = None
        self.content_length: int | None = None
        self.body_length: int | None = None
        self.redactor = ctx.redactor

    def phases(self) -> Phases:
        timer = self.timer
        end = self.end or time.perf_counter()
        headers_at = self.headers_at or end
        connect = max(timer.conn_time - timer.dns_time - timer.tls_time, 0.0)
        processing = max(headers_at - timer.ready, 0.0)
        transfer = max(end - headers_at, 0.0) if self.headers_at else 0.0
        return Phases(
            resolve=timer.dns_time,
            connect=connect,
            tls=timer.tls_time,
            processing=processing,
            transfer=transfer,
        )

    def finish(
        self,
        reason: Reason | None,
        message: str = "",
        assertions: tuple[AssertionOutcome, ...] = (),
        extracted: tuple[tuple[str, str], ...] = (),
    ) -> StepResult:
        self.end = self.end or time.perf_counter()
        return StepResult(
            name=self.name,
            success=reason is None,
            duration=self.end - self.timer.start,
            reason=reason,
            message=self.redactor(message),
            status_code=self.status,
            phases=self.phases(),
            assertions=assertions,
            extracted=extracted,
            critical=self.critical,
            request_line=self.redactor(self.request_line),
            tls_expiry=self.tls_expiry,
            tls_version=self.tls_version,
            redirects=self.timer.redirects,
            content_length=self.content_length,
            http_version=self.http_version,
            body_length=self.body_length,
        )

    def failed(self, reason: Reason, message: str) -> StepOutcome:
        """The step's outcome when it fails before extracting anything."""
        return StepOutcome(self.finish(reason, message), {})


async def run_step(
    name: str,
    spec: RequestSpec,
    variables: Mapping[str, str],
    ctx: ProbeContext,
    critical: bool = True,
) -> StepOutcome:
    """Send one request within the context's deadline and judge the response."""
    step = _Step(name, spec, ctx, critical)
    values = {**ctx.values, **variables}
    try:
        request = _build_request(spec, values)
        _check_url(request.url, "url")
        if request.proxy is not None:
            _check_url(request.proxy, "proxy_url")
    except TemplateError as exc:
        return step.failed(Reason.TEMPLATE, str(exc))
    except _InvalidUrl as exc:
        return step.failed(Reason.INVALID_URL, str(exc))
    step.request_line = f"{spec.method} {display_url(request.url)}"
    mismatch = family_mismatch(_host(request.url), spec.ip_protocol)
    if mismatch:
        return step.failed(Reason.DNS, mismatch)
    try:
        async with asyncio.timeout_at(ctx.deadline):
            raw = await _send(step, request)
    except TimeoutError:
        return step.failed(Reason.TIMEOUT, _timeout_message(step))
    except _BodyTooLarge:
        message = f"body larger than max_body_bytes ({spec.max_body_bytes})"
        return step.failed(Reason.BODY_TOO_LARGE, message)
    except TlsSetupError as exc:
        return step.failed(Reason.RESOURCE if out_of_descriptors(exc) else Reason.TLS, str(exc))
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return step.failed(_classify(exc), _error_message(exc))
    return _judge(step, raw)


@dataclass(frozen=True, slots=True)
class _Raw:
    response: Response
    cookies: SimpleCookie


async def _send(step: _Step, request: _Request) -> _Raw:
    spec = step.spec
    session = step.ctx.clients.session(spec.keep_alive, spec.ip_protocol)
    ssl_context = await step.ctx.clients.ssl_for(spec.tls)
    body = RequestBody(request.data) if request.data is not None else None
    try:
        with collect_handshakes(step.timer.handshakes):
            return await _exchange(step, request, session, ssl_context, body)
    except asyncio.CancelledError:  # the deadline: a peer that never reads keeps nothing
        if body is not None:
            body.abandon()
        raise


async def _exchange(
    step: _Step,
    request: _Request,
    session: aiohttp.ClientSession,
    ssl_context: ssl.SSLContext,
    payload: RequestBody | None,
) -> _Raw:
    spec = step.spec
    async with session.request(
        spec.method,
        request.url,
        headers=request.headers,
        data=payload,
        allow_redirects=spec.follow_redirects,
        max_redirects=10,
        ssl=ssl_context,
        server_hostname=spec.tls.server_name or spec.hostname,
        proxy=request.proxy,
        trace_request_ctx=step.timer,
        middlewares=_redirect_guard(spec),
    ) as resp:
        step.headers_at = time.perf_counter()
        step.status = resp.status
        step.http_version = f"{resp.version.major}.{resp.version.minor}" if resp.version else None
        step.content_length = resp.content_length if resp.content_length is not None else -1
        _read_tls(step, resp)
        body = await _read_capped(resp, spec.max_body_bytes)
        step.end = time.perf_counter()
        step.body_length = len(body)
        headers = {k.lower(): _header_text(v) for k, v in resp.headers.items()}
        cookies: SimpleCookie = SimpleCookie()
        for value in resp.headers.getall("Set-Cookie", []):
            cookies.load(value)
        latency = step.end - step.timer.start
        response = Response(
            resp.status,
            latency,
            headers,
            body,
            tls_expiry=step.tls_expiry,
            tls_version=step.tls_version,
        )
        return _Raw(response, cookies)


def _redirect_guard(spec: RequestSpec) -> tuple[_RedirectGuard, ...]:
    """The middleware that guards this request's redirects, when it has headers to guard."""
    if not spec.follow_redirects:
        return ()
    guarded = {name.lower() for name in spec.headers} - _FOLLOW_ANYWHERE - NEVER_REDIRECTED
    if spec.hostname is None and not guarded - set(spec.redirect_headers):
        return ()  # aiohttp itself drops Authorization, Cookie and Proxy-Authorization
    return (_RedirectGuard(spec),)


class _RedirectGuard:
    """A client middleware that keeps a request's credentials at their origin.

    aiohttp drops Authorization and Cookie on a redirect to another origin but sends every
    other header on, an X-Api-Key too. From the first hop that leaves the first request's
    origin on, only standard headers and those named in `redirect_headers` go on; a Host
    set by `hostname` becomes the new target's.
    """

    def __init__(self, spec: RequestSpec) -> None:
        configured = {name.lower() for name in spec.headers}
        kept = _FOLLOW_ANYWHERE | set(spec.redirect_headers)
        self._dropped = ((configured - kept) | NEVER_REDIRECTED) - {"host"}
        self._own_host = spec.hostname is not None
        self._origin: object = None
        self._left = False

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        origin = request.url.origin()
        if self._origin is None:
            self._origin = origin
        elif origin != self._origin:
            self._left = True
        if self._left:
            for name in self._dropped:
                request.headers.popall(name, None)
            host = request.url.host_port_subcomponent
            if self._own_host and host is not None:
                request.headers["Host"] = host
        return await handler(request)


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _read_tls(step: _Step, resp: aiohttp.ClientResponse) -> None:
    """TLS facts of the final connection, even when it was reused and already released.

    From this request's handshake, else from the live connection, else (a reused keep-alive
    connection whose small body released it) from the handshake that made it.
    """
    if resp.url.scheme != "https" or resp.url.host is None or resp.url.port is None:
        return
    clients, options = step.ctx.clients, step.spec.tls
    ssl_object: object = step.timer.handshakes[-1] if step.timer.handshakes else None
    if ssl_object is None and resp.connection is not None and resp.connection.transport:
        ssl_object = resp.connection.transport.get_extra_info("ssl_object")
    facts: PeerFacts | None
    if isinstance(ssl_object, ssl.SSLObject):
        facts = peer_facts(ssl_object)
        clients.remember_peer(resp.url.host, resp.url.port, options, facts)
    else:
        facts = clients.known_peer(resp.url.host, resp.url.port, options)
    if facts is not None:
        step.tls_version = facts.version
        step.tls_expiry = facts.expiry


def _timeout_message(step: _Step) -> str:
    if step.headers_at:
        where = "reading the body"
    elif step.timer.ready > step.timer.start:
        where = "waiting for the response"
    else:
        where = "connecting"
    return f"deadline reached while {where}"


def _judge(step: _Step, raw: _Raw) -> StepOutcome:
    """Status first, then the JSON document, the extractions and the assertions."""
    spec = step.spec
    response = raw.response
    if not _status_expected(response.status, spec.expected_status):
        expected = ", ".join(str(s) for s in spec.expected_status)
        return step.failed(Reason.STATUS, f"status {response.status}, expected {expected}")
    needs_json = any(a.needs_json for a in spec.assertions) or any(
        r.json_path is not None for r in spec.extract.values()
    )
    if needs_json:
        try:
            response = replace(response, document=json.loads(response.body))
        except (ValueError, UnicodeDecodeError) as exc:
            return step.failed(Reason.INVALID_JSON, f"response is not JSON: {exc}")
        except RecursionError:  # nested deeper than the interpreter's recursion limit
            return step.failed(Reason.INVALID_JSON, "response is not JSON: nested too deeply")
    variables: dict[str, str] = {}
    secret_values: set[str] = set()
    for var, rule in spec.extract.items():
        value = _extract(rule, response, raw.cookies)
        if value is None:
            return step.failed(Reason.ASSERTION, f"could not extract {var!r}")
        variables[var] = value
        if rule.secret:
            secret_values.add(value)
    # Widen the run's redactor too: whatever ends the run later still hides these values.
    step.redactor = step.ctx.redactor = step.ctx.redactor.with_secrets(secret_values)
    shown = tuple(
        (
            var,
            REDACTED if rule.secret else step.redactor.excerpt(variables[var], _SHOWN_VALUE_CHARS),
        )
        for var, rule in spec.extract.items()
    )
    outcomes = tuple(a.evaluate(response, step.redactor) for a in spec.assertions)
    failed = [o for o in outcomes if not o.passed]
    reason = Reason.ASSERTION if failed else None
    message = f"assertion failed: {failed[0].text} (actual {failed[0].actual})" if failed else ""
    result = step.finish(reason, message, outcomes, shown)
    return StepOutcome(result, variables if not failed else {})

"""The one step runner: send one HTTP request, time its phases, judge its response.

Used by both http (a one-step flow) and flow. Each request is bounded by the attempt's
deadline itself, so that a timeout names the phase it hung in and the flow goes on to its
`always_run` steps; it tells the runner's recorder how to end the step if the runner has to
cut the attempt short instead (`ctx.recorder`).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

import aiohttp

from prober.config.assertions import Response, response_headers
from prober.config.model import RequestSpec
from prober.config.secrets import REDACTED
from prober.config.templates import TemplateError
from prober.probes.context import (
    HopRecorder,
    PhaseTimer,
    ProbeContext,
    RequestBody,
    collect_peers,
    family_mismatch,
    out_of_descriptors,
)
from prober.probes.http_judge import (
    MAX_REDIRECTS,
    extracted_value,
    http_version,
    judged,
    last_modified,
    redirect_count,
    ssl_refused,
    status_expected,
    version_refused,
    wire_content_length,
)
from prober.probes.lean import LeanFailure, covers, send
from prober.probes.net.addresses import address_facts
from prober.probes.net.aiohttp_errors import classify, describe
from prober.probes.net.encoding import BodyReader, BodyTooLarge, UndecodableBody
from prober.probes.net.redirects import redirect_guard
from prober.probes.net.request import (
    InvalidUrl,
    Request,
    build_request,
    check_url,
    display_url,
    header_text,
)
from prober.probes.net.tls import PeerFacts, TlsSetupError, collect_handshakes, peer_facts
from prober.result import AssertionOutcome, HttpFacts, Phases, Reason, StepResult, TlsFacts

_SHOWN_VALUE_CHARS = 48
# The timer of a step that aiohttp does not send: never written, all zeros.
_UNTIMED = PhaseTimer(0.0)


@dataclass(frozen=True, slots=True)
class StepRun:
    """A step's result plus the variables it extracted (raw: they feed later requests).

    The secret ones among them were added to the run's redactor (`ctx.redactor`).
    """

    result: StepResult
    variables: dict[str, str]


class _Step:
    """State of one request while it runs; turned into a StepResult at the end."""

    def __init__(self, name: str, spec: RequestSpec, ctx: ProbeContext, critical: bool) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx
        self.critical = critical
        self.started = time.perf_counter()
        # aiohttp's hooks fill a timer of the request's own (`_run_aiohttp`); the lean path
        # times itself, and a lean step cut short shows this one's zeros.
        self.timer = _UNTIMED
        self.end = 0.0
        self.status: int | None = None
        self.request_line: str = spec.method
        self.tls: TlsFacts | None = None
        self.http_version: str | None = None
        self.content_length: int | None = None
        self.body_length: int | None = None
        self.redirects = 0
        self.peer: tuple[int, float] | None = None
        self.last_modified: float | None = None
        self.failed_due_to_regex = False
        # Why the response judged is not the last one asked for (the redirect limit).
        self.cut_short = ""
        self.redactor = ctx.redactor
        # The facts of a request the lean path sent (it times its own phases).
        self.lean_facts: HttpFacts | None = None

    def phases(self) -> Phases:
        """The phases summed over every hop of the redirect chain (as blackbox_exporter);
        transfer is the final hop's body."""
        timer = self.timer
        end = self.end or time.perf_counter()
        connect = max(timer.conn_time - timer.dns_time - timer.tls_time, 0.0)
        processing = timer.processing
        if not timer.headers_at and timer.ready > timer.start:  # cut short waiting for headers
            processing += max(end - timer.ready, 0.0)
        transfer = max(end - timer.headers_at, 0.0) if timer.headers_at else 0.0
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
        self.ctx.recorder.last_byte = self.end
        return StepResult(
            name=self.name,
            success=reason is None,
            duration=self.end - self.started,
            reason=reason,
            message=self.redactor(message),
            facts=self._facts(),
            assertions=assertions,
            extracted=extracted,
            critical=self.critical,
            request_line=self.redactor(self.request_line),
        )

    def _facts(self) -> HttpFacts:
        if self.lean_facts is not None:
            if not self.failed_due_to_regex:  # as the lean path made them
                return self.lean_facts
            return replace(self.lean_facts, failed_due_to_regex=True)
        return HttpFacts(
            status_code=self.status,
            phases=self.phases(),
            redirects=self.redirects,
            content_length=self.content_length,
            body_length=self.body_length,
            http_version=self.http_version,
            tls=self.tls,
            ip_protocol=self.peer[0] if self.peer else None,
            ip_addr_hash=self.peer[1] if self.peer else None,
            failed_due_to_regex=self.failed_due_to_regex,
            last_modified=self.last_modified,
        )

    def failed(self, reason: Reason, message: str) -> StepRun:
        """The step's outcome when it fails before extracting anything."""
        return StepRun(self.finish(reason, message), {})

    def stage(self) -> str:
        """What the request is doing now, for a timeout's message."""
        if self.timer.headers_at and self.status is not None:
            return "reading the body"
        if self.timer.ready > self.timer.start:
            return "waiting for the response"
        return "connecting"


async def run_step(
    name: str,
    spec: RequestSpec,
    variables: Mapping[str, str],
    ctx: ProbeContext,
    critical: bool = True,
) -> StepRun:
    """Send one request within the context's deadline and judge the response."""
    step = _Step(name, spec, ctx, critical)
    ctx.recorder.begin(name, finish=step.finish, stage=step.stage)
    values = {**ctx.values, **variables} if variables else ctx.values
    try:
        request = build_request(spec, values)
        check_url(request.url, "url")
        if request.proxy is not None:
            check_url(request.proxy, "proxy_url")
    except TemplateError as exc:
        return step.failed(Reason.TEMPLATE, str(exc))
    except InvalidUrl as exc:
        return step.failed(Reason.INVALID_URL, str(exc))
    step.request_line = f"{spec.method} {display_url(request.url)}"
    mismatch = family_mismatch(_host(request.url), spec.ip_protocol, spec.ip_protocol_fallback)
    if mismatch:
        return step.failed(Reason.DNS, mismatch)
    if covers(spec):
        return await _run_lean(step, request)
    return await _run_aiohttp(step, request)


async def _run_aiohttp(step: _Step, request: Request) -> StepRun:
    """The request over aiohttp, bounded by the context's deadline."""
    spec, ctx = step.spec, step.ctx
    step.timer = PhaseTimer(step.started)
    try:
        async with asyncio.timeout_at(ctx.deadline):
            raw = await _send(step, request)
    except TimeoutError:
        return step.failed(Reason.TIMEOUT, f"deadline reached while {step.stage()}")
    except BodyTooLarge:
        what = "decoded body" if spec.compression not in (None, "identity") else "body"
        message = f"{what} larger than max_body_bytes ({spec.max_body_bytes})"
        return step.failed(Reason.BODY_TOO_LARGE, message)
    except UndecodableBody as exc:
        return step.failed(Reason.PROTOCOL, str(exc))
    except TlsSetupError as exc:
        return step.failed(Reason.RESOURCE if out_of_descriptors(exc) else Reason.TLS, str(exc))
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return step.failed(classify(exc), describe(exc))
    return _judge(step, raw)


async def _run_lean(step: _Step, request: Request) -> StepRun:
    """The request over the lean path (probes/lean.py), which keeps the deadline itself."""
    try:
        reply = await send(step.spec, request, step.ctx, step.started)
    except LeanFailure as exc:
        step.lean_facts, step.end = exc.facts, exc.ended
        return step.failed(exc.reason, str(exc))
    step.lean_facts, step.end = reply.facts, reply.ended
    step.cut_short = reply.cut_short
    tls = reply.facts.tls is not None
    return _judge(step, _Raw(reply.response, reply.cookies, reply.version, tls))


@dataclass(frozen=True, slots=True)
class _Raw:
    response: Response
    cookies: SimpleCookie
    version: str | None = None
    over_tls: bool = False


async def _send(step: _Step, request: Request) -> _Raw:
    spec = step.spec
    session = step.ctx.clients.session(spec.keep_alive, spec.ip_protocol, spec.ip_protocol_fallback)
    ssl_context = await step.ctx.clients.ssl_for(spec.tls)
    body = RequestBody(request.data) if request.data is not None else None
    try:
        with collect_handshakes(step.timer.handshakes), collect_peers(step.timer.peers):
            return await _exchange(step, request, session, ssl_context, body)
    except asyncio.CancelledError:  # the deadline: a peer that never reads keeps nothing
        if body is not None:
            body.abandon()
        raise


async def _exchange(
    step: _Step,
    request: Request,
    session: aiohttp.ClientSession,
    ssl_context: ssl.SSLContext,
    payload: RequestBody | None,
) -> _Raw:
    """Send the request, follow up to MAX_REDIRECTS redirects, read the final body.

    aiohttp gives up on the redirect response that reaches `max_redirects`: asked for one
    more than followed, so that response is the 11th, judged as blackbox_exporter judges it
    (its status and headers, no body).
    """
    spec = step.spec
    headers = request.headers
    if spec.compression and not any(name.lower() == "accept-encoding" for name in headers):
        headers = {**headers, "Accept-Encoding": spec.compression}
    try:
        async with session.request(
            spec.method,
            request.url,
            headers=headers,
            data=payload,
            allow_redirects=spec.follow_redirects,
            max_redirects=MAX_REDIRECTS + 1,
            ssl=ssl_context,
            server_hostname=spec.tls.server_name or spec.hostname,
            proxy=request.proxy,
            trace_request_ctx=step.timer,
            middlewares=(*redirect_guard(spec), HopRecorder(step.timer)),
        ) as resp:
            reader = _received(step, resp, _followed(resp))
            async for chunk in resp.content.iter_chunked(65536):
                reader.feed(chunk)
            body = reader.body()
            step.end = time.perf_counter()
            step.body_length = len(body)
            return _raw(step, resp, body)
    except aiohttp.TooManyRedirects as exc:
        last = exc.history[-1]
        step.cut_short = f"too many redirects ({MAX_REDIRECTS})"
        _received(step, last, len(exc.history) - 1)
        step.end = time.perf_counter()
        step.body_length = 0
        return _raw(step, last, b"")


def _followed(resp: aiohttp.ClientResponse) -> int:
    """The redirects aiohttp followed: a 3xx without Location ends the chain, yet aiohttp
    puts it in its own history; Go (blackbox_exporter) follows none there."""
    history = resp.history
    return len(history) - 1 if history and history[-1] is resp else len(history)


def _received(step: _Step, resp: aiohttp.ClientResponse, followed: int) -> BodyReader:
    """Note what the final response's head says; the reader for its body."""
    step.status = resp.status
    step.http_version = f"{resp.version.major}.{resp.version.minor}" if resp.version else None
    headers = response_headers(resp.headers.items())
    step.redirects = redirect_count(followed, resp.status, headers)
    step.content_length = wire_content_length(
        resp.status, resp.method, resp.headers.get("Content-Length")
    )
    step.last_modified = last_modified(headers)
    peers = step.timer.peers
    step.peer = address_facts(peers[-1] if peers else (resp.url.host or ""))
    _read_tls(step, resp)
    return BodyReader(step.spec.compression, step.spec.max_body_bytes)


def _raw(step: _Step, resp: aiohttp.ClientResponse, body: bytes) -> _Raw:
    headers = response_headers((k, header_text(v)) for k, v in resp.headers.items())
    cookies: SimpleCookie = SimpleCookie()
    for value in resp.headers.getall("Set-Cookie", []):
        cookies.load(value)
    latency = step.end - step.started
    tls = step.tls or TlsFacts()
    version = http_version(resp.version.major, resp.version.minor) if resp.version else None
    response = Response(
        resp.status, latency, headers, body, tls_expiry=tls.expiry, tls_version=tls.version
    )
    return _Raw(response, cookies, version, resp.url.scheme == "https")


@lru_cache(maxsize=4096)
def _host(url: str) -> str:
    """The URL's host (cached: a check sends the same URL run after run)."""
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
        step.tls = facts.tls


def _judge(step: _Step, raw: _Raw) -> StepRun:
    """Status first, then the JSON document, the extractions and the assertions."""
    spec = step.spec
    response = raw.response
    if not status_expected(response.status, spec.expected_status):
        expected = ", ".join(str(s) for s in spec.expected_status)
        after = f" after {step.cut_short}" if step.cut_short else ""
        return step.failed(Reason.STATUS, f"status {response.status}{after}, expected {expected}")
    refused = version_refused(spec, raw.version) or ssl_refused(spec, raw.over_tls)
    if refused:
        return step.failed(Reason.ASSERTION, refused)
    if spec.needs_json:
        try:
            response = replace(response, document=json.loads(response.body))
        except (ValueError, UnicodeDecodeError) as exc:
            return step.failed(Reason.INVALID_JSON, f"response is not JSON: {exc}")
        except RecursionError:  # nested deeper than the interpreter's recursion limit
            return step.failed(Reason.INVALID_JSON, "response is not JSON: nested too deeply")
    variables: dict[str, str] = {}
    shown: tuple[tuple[str, str], ...] = ()
    if spec.extract:
        try:
            variables, shown = _extracted(step, response, raw.cookies)
        except _NotExtracted as missing:
            return step.failed(Reason.ASSERTION, f"could not extract {missing.var!r}")
    outcomes, step.failed_due_to_regex = judged(spec, response, step.redactor)
    failed = [o for o in outcomes if not o.passed]
    reason = Reason.ASSERTION if failed else None
    message = f"assertion failed: {failed[0].text} (actual {failed[0].actual})" if failed else ""
    result = step.finish(reason, message, outcomes, shown)
    return StepRun(result, variables if not failed else {})


class _NotExtracted(Exception):
    """A variable the response does not hold."""

    def __init__(self, var: str) -> None:
        super().__init__(var)
        self.var = var


def _extracted(
    step: _Step, response: Response, cookies: SimpleCookie
) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """The step's variables, and each as the result shows it (a secret one hidden); the
    secret ones widen the run's redactor, so whatever ends the run later still hides them."""
    spec = step.spec
    variables: dict[str, str] = {}
    secret_values: set[str] = set()
    for var, rule in spec.extract.items():
        value = extracted_value(rule, response, cookies)
        if value is None:
            raise _NotExtracted(var)
        variables[var] = value
        if rule.secret:
            secret_values.add(value)
    if secret_values:
        step.redactor = step.ctx.redactor = step.ctx.redactor.with_secrets(secret_values)
    shown = tuple(
        (
            var,
            REDACTED if rule.secret else step.redactor.excerpt(variables[var], _SHOWN_VALUE_CHARS),
        )
        for var, rule in spec.extract.items()
    )
    return variables, shown

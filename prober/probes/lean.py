"""The lean request path: a step's request sent with h1 (`net/h1.py`), one fresh connection
per hop, instead of through aiohttp.

It costs a fraction of aiohttp's CPU per probe and takes its timestamps in the transport
callbacks (docs/PERFORMANCE.md). The step runner uses it for every request it `covers`: no
proxy, no keep-alive and no `ip_protocol_fallback`, which stay on aiohttp. Redirects are
followed here, hop by hop, by the rules both paths share (`http_judge`: up to MAX_REDIRECTS
followed, the next redirect response judged; redirects counted as blackbox_exporter counts
them; a request's own headers stay at their origin, `net/redirects.py`), and by
blackbox_exporter's (docs/research/blackbox.md §1.3, §1.11): cookies a hop sets go with the
next hops to their host name; phases are summed over the hops, transfer is the final hop's.
The body is decoded only for a `compression:` (`encoding.BodyReader`, through h1); TLS facts
come from the chains h1 keeps (`tls.chain_facts`, as the aiohttp path's `peer_facts`). With
`http2: true` each https hop offers ALPN h2 (its own SSL context) and speaks HTTP/2 where the
server chooses it (h1's `alpn.Negotiated`); the reply is judged alike, version `HTTP/2.0`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urljoin, urlsplit

from prober.config.assertions import Response, response_headers
from prober.config.model import NEVER_REDIRECTED, RequestSpec
from prober.probes.context import FAMILIES, ProbeContext, out_of_descriptors
from prober.probes.http_judge import (
    MAX_REDIRECTS,
    Headers,
    is_redirect,
    last_modified,
    redirect_count,
    wire_content_length,
)
from prober.probes.net.addresses import address_facts
from prober.probes.net.h1 import (
    BodyTooLarge,
    ConnectFailed,
    ConnectRefused,
    DeadlineReached,
    H1Error,
    H1Request,
    H1Response,
    InvalidUrl,
    NetworkError,
    PeerReset,
    Phase,
    ProtocolError,
    ResolveFailed,
    ResponseHead,
    TlsFailed,
    fetch,
)
from prober.probes.net.redirects import FOLLOW_ANYWHERE
from prober.probes.net.request import Request
from prober.probes.net.tls import (
    TlsBlock,
    TlsSetupError,
    chain_facts,
    request_tls,
    tls_reason,
)
from prober.result import HttpFacts, Phases, Reason, TlsFacts

# Set to False to send every request through aiohttp (bench/harness.py measures both paths).
ENABLED = True
# Methods aiohttp gives a default Content-Type (application/octet-stream), body or not.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# What a step was doing when the deadline came, in the aiohttp path's words (`_Step.stage`).
_STAGES: dict[Phase, str] = {
    "resolve": "connecting",
    "connect": "connecting",
    "tls": "connecting",
    "processing": "waiting for the response",
    "transfer": "reading the body",
}


def covers(spec: RequestSpec) -> bool:
    """Whether the lean path sends this request (else aiohttp: proxies, keep-alive sessions,
    resolving with `ip_protocol_fallback`)."""
    return (
        ENABLED and spec.proxy_url is None and not spec.keep_alive and not spec.ip_protocol_fallback
    )


@dataclass(frozen=True, slots=True)
class LeanReply:
    """The final response for the step to judge, its cookies, the step's facts, its end;
    `version` as `valid_http_versions` lists it, `cut_short` why it is not the last one
    asked for (the redirect limit) or ""."""

    response: Response
    cookies: SimpleCookie
    facts: HttpFacts
    ended: float
    version: str
    cut_short: str = ""


class LeanFailure(Exception):
    """The request failed with `reason`; `facts` are what it showed until then."""

    def __init__(self, reason: Reason, message: str, facts: HttpFacts, ended: float) -> None:
        super().__init__(message)
        self.reason = reason
        self.facts = facts
        self.ended = ended


async def send(spec: RequestSpec, request: Request, ctx: ProbeContext, started: float) -> LeanReply:
    """Send the request, following redirects, by the context's deadline.

    `started` (perf_counter) is when the step began: the response's latency counts from it.
    """
    hops = _Hops(spec, request, started)
    family = FAMILIES[spec.ip_protocol]
    server_hostname = spec.tls.server_name or spec.hostname
    while True:
        ssl_context = None
        if hops.url[:6].lower() == "https:":
            block = request_tls(spec)
            ssl_context = ctx.clients.built_ssl(block) or await _ssl_context(ctx, block, hops)
        sent = H1Request(
            hops.method,
            hops.url,
            hops.headers(ctx.clients.user_agent),
            hops.body or b"",
            ssl_context,
            server_hostname,
            family,
            spec.max_body_bytes,
            spec.compression,
            spec.http2,
        )
        try:
            response = await fetch(sent, ctx.deadline)
        except H1Error as exc:
            raise hops.failed(exc) from None
        # Every value of each header by lower-case name, made once per hop for all readers.
        headers = response_headers(response.headers)
        hops.arrived(response, headers)
        if not hops.follow(response, headers):
            return hops.reply(response, headers)


async def _ssl_context(ctx: ProbeContext, block: TlsBlock, hops: _Hops) -> ssl.SSLContext:
    """The check's SSL context (built once per `tls` block and ALPN offer) for an https hop,
    waited for by the deadline where it is not built yet."""
    try:
        async with asyncio.timeout_at(ctx.deadline):
            return await ctx.clients.ssl_for(*block)
    except TimeoutError:
        raise hops.stopped(Reason.TIMEOUT, "deadline reached while connecting") from None
    except TlsSetupError as exc:
        reason = Reason.RESOURCE if out_of_descriptors(exc) else Reason.TLS
        raise hops.stopped(reason, str(exc)) from None


@dataclass
class _Hops:
    """What a request carries from hop to hop: where it goes, its headers, cookies, phases."""

    spec: RequestSpec
    request: Request
    started: float
    url: str = ""
    method: str = ""
    body: bytes | None = None
    followed: int = 0
    left_origin: bool = False
    phases: list[Phases] = field(default_factory=list)
    jar: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)
    # The headers left behind once a hop leaves the first origin: worked out when one does.
    dropped: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.url, self.method, self.body = self.request.url, self.spec.method, self.request.data

    def headers(self, user_agent: str) -> tuple[tuple[str, str], ...]:
        """This hop's headers as aiohttp would send them: User-Agent, a default Content-Type."""
        given = self.request.headers
        if self.left_origin:
            given = {k: v for k, v in given.items() if k.lower() not in self.dropped}
        names = {name.lower() for name in given}
        sent = list(given.items())
        if "user-agent" not in names:
            sent.append(("User-Agent", user_agent))
        with_body = self.body is not None or self.method in _BODY_METHODS
        if with_body and "content-type" not in names:
            sent.append(("Content-Type", "application/octet-stream"))
        cookies = self._cookies_for(self.url)
        if cookies:
            own = [v for k, v in sent if k.lower() == "cookie"]
            sent = [(k, v) for k, v in sent if k.lower() != "cookie"]
            sent.append(("Cookie", "; ".join([*own, cookies])))
        return tuple(sent)

    def arrived(self, response: H1Response, headers: Headers) -> None:
        """Note a hop's response (`headers`: its headers by lower-case name)."""
        self.phases.append(response.timeline.phases())
        cookies = headers.get("set-cookie")
        if cookies:
            self._keep_cookies(cookies)

    def follow(self, response: H1Response, headers: Headers) -> bool:
        """Whether to send the next hop (this response redirects, within the limit)."""
        if not self.spec.follow_redirects or self.followed >= MAX_REDIRECTS:
            return False
        if not is_redirect(response.status, headers):
            return False
        location = _last(headers, "location") or _last(headers, "uri") or ""
        self.followed += 1
        target = urljoin(self.url, location)
        if urlsplit(target).scheme.lower() not in ("http", "https"):
            raise self.stopped(Reason.ERROR, "redirected to a location that is not http(s)")
        moved_away = response.status == 303 and self.method != "HEAD"
        if moved_away or (response.status in (301, 302) and self.method == "POST"):
            self.method, self.body = "GET", None
        self.url = target
        if not self.left_origin and _origin(target) != _origin(self.request.url):
            self.left_origin = True
            self.dropped = _dropped_on_leaving(self.spec)
        return True

    def reply(self, response: H1Response, headers: Headers) -> LeanReply:
        """The final response, to judge; a redirect past the limit is judged without its
        body, as the aiohttp path (which does not read it) judges it."""
        ended = response.timeline.last_byte or response.timeline.ended
        cut_short = ""
        body = response.body
        if self.spec.follow_redirects and is_redirect(response.status, headers):
            cut_short, body = f"too many redirects ({MAX_REDIRECTS})", b""
        facts = self._facts(response, headers, len(body))
        tls = facts.tls or TlsFacts()
        judged = Response(
            response.status,
            ended - self.started,
            headers,
            body,
            tls_expiry=tls.expiry,
            tls_version=tls.version,
        )
        version = f"HTTP/{response.http_version}"
        cookies = _final_cookies(headers.get("set-cookie", ()))
        return LeanReply(judged, cookies, facts, ended, version, cut_short)

    def failed(self, exc: H1Error) -> LeanFailure:
        """The hop's error as the step's failure, with the facts seen until then."""
        timeline = exc.timeline
        if timeline is not None:
            self.phases.append(timeline.phases())
        head = exc.head
        message = str(exc)
        decoded = self.spec.compression not in (None, "identity")
        if isinstance(exc, BodyTooLarge) and decoded:  # the aiohttp path's words
            message = f"decoded body larger than max_body_bytes ({self.spec.max_body_bytes})"
        if isinstance(exc, DeadlineReached):
            stage = _STAGES[timeline.phase] if timeline is not None else "connecting"
            message = f"deadline reached while {stage}"
        ended = timeline.ended if timeline is not None else self.started
        facts = self._facts(head, response_headers(head.headers)) if head else self._facts()
        return LeanFailure(_reason(exc), message, facts, ended)

    def stopped(self, reason: Reason, message: str) -> LeanFailure:
        """A failure between hops (no request of its own under way)."""
        return LeanFailure(reason, message, self._facts(), time.perf_counter())

    def _facts(
        self,
        head: ResponseHead | H1Response | None = None,
        headers: Headers | None = None,
        body_length: int | None = None,
    ) -> HttpFacts:
        """The step's facts: the phases so far, and what the final response's head showed
        (`headers`: its headers by lower-case name): status, version, Go's content length,
        TLS, the address it came from, redirects, Last-Modified."""
        phases = _summed(self.phases)
        if head is None or headers is None:
            return HttpFacts(phases=phases, redirects=self.followed, body_length=body_length)
        lengths = headers.get("content-length")
        ended = isinstance(head, H1Response) and head.stream_ended_with_head
        header = lengths[-1] if lengths else None
        length = wire_content_length(head.status, self.method, header, stream_ended_with_head=ended)
        session = head.tls
        tls = None
        if session is not None:
            tls = chain_facts(session.version, session.served, session.verified)
        peer = address_facts(head.peer_address)
        return HttpFacts(
            status_code=head.status,
            phases=phases,
            redirects=redirect_count(self.followed, head.status, headers),
            content_length=length,
            body_length=body_length,
            http_version=head.http_version,
            tls=tls,
            ip_protocol=peer[0] if peer else None,
            ip_addr_hash=peer[1] if peer else None,
            last_modified=last_modified(headers),
        )

    def _keep_cookies(self, set_cookies: tuple[str, ...]) -> None:
        """Keep what a hop's Set-Cookie headers set, by domain (its host name by default)."""
        host = (urlsplit(self.url).hostname or "").lower()
        for value in set_cookies:
            parsed: SimpleCookie = SimpleCookie()
            try:
                parsed.load(value)
            except CookieError:
                continue
            for key, morsel in parsed.items():
                domain = morsel["domain"].lstrip(".").lower() or host
                path = morsel["path"] or "/"
                if morsel["max-age"] == "0":
                    self.jar.pop((domain, key), None)
                else:
                    self.jar[(domain, key)] = (morsel.value, path, host)

    def _cookies_for(self, url: str) -> str:
        """The jar's cookies for this hop, by its host name (not its address) and path."""
        if not self.jar:
            return ""
        parts = urlsplit(url)
        host, path = (parts.hostname or "").lower(), parts.path or "/"
        return "; ".join(
            f"{name}={value}"
            for (domain, name), (value, prefix, _) in self.jar.items()
            if (host == domain or host.endswith("." + domain)) and path.startswith(prefix)
        )


def _final_cookies(set_cookies: tuple[str, ...]) -> SimpleCookie:
    cookies: SimpleCookie = SimpleCookie()
    for value in set_cookies:
        cookies.load(value)
    return cookies


def _last(headers: Headers, name: str) -> str | None:
    """The last value of a header (`name` lower-case), None when absent."""
    values = headers.get(name)
    return values[-1] if values else None


def _summed(hops: list[Phases]) -> Phases:
    """Each phase summed over the hops but transfer, which is the final hop's (blackbox)."""
    if not hops:
        return Phases()
    if len(hops) == 1:
        return hops[0]
    return Phases(
        resolve=sum(p.resolve for p in hops),
        connect=sum(p.connect for p in hops),
        tls=sum(p.tls for p in hops),
        processing=sum(p.processing for p in hops),
        transfer=hops[-1].transfer,
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _dropped_on_leaving(spec: RequestSpec) -> frozenset[str]:
    """The headers that stay behind once a hop leaves the first origin (`net/redirects.py`)."""
    configured = {name.lower() for name in spec.headers}
    kept = FOLLOW_ANYWHERE | set(spec.redirect_headers)
    return frozenset((configured - kept) | NEVER_REDIRECTED)


def _reason(exc: H1Error) -> Reason:
    """An h1 failure as a bounded reason, as step.py names aiohttp's."""
    cause = exc.error if isinstance(exc, TlsFailed) else exc.__cause__
    if out_of_descriptors(cause):
        return Reason.RESOURCE
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, TlsFailed):
        return tls_reason(exc.error)
    return Reason.ERROR


_REASONS: tuple[tuple[type[H1Error], Reason], ...] = (
    (DeadlineReached, Reason.TIMEOUT),
    (BodyTooLarge, Reason.BODY_TOO_LARGE),
    (InvalidUrl, Reason.INVALID_URL),
    (ResolveFailed, Reason.DNS),
    (ConnectRefused, Reason.CONNECT_REFUSED),
    (ConnectFailed, Reason.CONNECT_ERROR),
    (PeerReset, Reason.RESET),
    (ProtocolError, Reason.PROTOCOL),
    (NetworkError, Reason.ERROR),
)

"""A request spec rendered into what is sent, and URLs and errors shown without secrets.

Shared by the step runner (probes/step.py); knows nothing of how the request is sent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

from prober.config.model import RequestSpec
from prober.config.secrets import REDACTED
from prober.config.templates import TemplateError, TemplateValues

# A URL inside an exception's text (aiohttp quotes the whole URL, query and userinfo too).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


class InvalidUrl(Exception):
    """A rendered URL that cannot be requested; the message never quotes the URL."""


# The URL helpers below are cached: a check renders the same URL run after run, and three
# parses of it were a tenth of a run's own CPU (bench/profile.py).
_URLS_CACHED = 4096


@lru_cache(maxsize=_URLS_CACHED)
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
class Request:
    """A request as it is sent: templates rendered, the body encoded."""

    url: str
    headers: dict[str, str]
    data: bytes | None
    proxy: str | None


def build_request(spec: RequestSpec, values: TemplateValues) -> Request:
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
    return Request(url, headers, data, proxy)


@lru_cache(maxsize=_URLS_CACHED)
def check_url(url: str, what: str) -> None:
    """Raise InvalidUrl unless `url` is http(s) with a host and a port that parses."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        part = (
            "port is not a number from 1 to 65535"
            if "port" in str(exc).lower()
            else "host is not valid"
        )
        raise InvalidUrl(f"invalid {what}: the {part}") from None
    if port == 0:
        raise InvalidUrl(f"invalid {what}: the port is not a number from 1 to 65535")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidUrl(f"invalid {what}: it needs http:// or https:// and a host")


def error_message(exc: BaseException) -> str:
    """An exception as text with every URL in it shown as display_url shows it."""
    return without_urls(f"{type(exc).__name__}: {exc}")


def without_urls(text: str) -> str:
    """`text` with every URL in it shown as display_url shows it."""
    return _URL_IN_TEXT.sub(lambda match: display_url(match.group(0)), text)


def header_text(value: str) -> str:
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


# Statuses whose response has no body, whatever its Content-Length says (RFC 9110 6.4.1).
_NO_BODY_STATUSES = frozenset({204, 304})


def reported_content_length(status: int, header: int | None) -> int:
    """`probe_http_content_length` as blackbox_exporter reports it (Go's resp.ContentLength).

    The header's value, -1 without one; 0 for 1xx, 204 and 304, which have no body.
    """
    if status in _NO_BODY_STATUSES or 100 <= status < 200:
        return 0
    return header if header is not None else -1

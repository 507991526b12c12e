"""The models of one HTTP request and how its response is judged: shared by http checks and
flow steps (pydantic v2, frozen)."""

from __future__ import annotations

import importlib.util
import re
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from prober.config.model_fields import (
    AssertionStr,
    JsonBody,
    Model,
    Name,
    PositiveDuration,
    TemplateStr,
    UrlTemplateStr,
    checked_regex,
)
from prober.config.templates import JsonPath, Regex, parse_json_path

DEFAULT_MAX_BODY_BYTES = 1 << 20
# Headers that are never sent on to another origin, whatever `redirect_headers` says.
NEVER_REDIRECTED = frozenset({"authorization", "proxy-authorization", "cookie", "host"})

IpProtocol = Literal["ip4", "ip6", "either"]
# blackbox_exporter's spellings (prometheus/common's TLSConfig and Go's resp.Proto).
TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
HttpVersion = Literal["HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/3.0"]
Compression = Literal["gzip", "deflate", "br", "identity"]
_TLS_ORDER = ("TLS10", "TLS11", "TLS12", "TLS13")


def brotli_available() -> bool:
    """Whether a brotli decoder is installed (`pip install prober[brotli]`)."""
    return any(importlib.util.find_spec(name) for name in ("brotli", "brotlicffi"))


def _accept_encoding_allows(header: str, compression: str) -> bool:
    """blackbox_exporter's rule for an Accept-Encoding header next to `compression`: the
    entry of highest q that names the algorithm or `*` must have q > 0."""
    entries: list[tuple[float, str]] = []
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        entries.append((q, name.strip()))
    entries.sort(key=lambda entry: -entry[0])
    return next((q > 0 for q, name in entries if name in (compression, "*")), False)


class Extraction(Model):
    """Where to take one variable from: exactly one of json, regex, header, cookie."""

    json_path: JsonPath | None = Field(default=None, alias="json")
    regex: Regex | None = None
    header: str | None = None
    cookie: str | None = None
    secret: bool = True

    @field_validator("json_path", mode="before")
    @classmethod
    def _parse_path(cls, value: Any) -> Any:
        return parse_json_path(value) if isinstance(value, str) else value

    @field_validator("regex", mode="before")
    @classmethod
    def _parse_regex(cls, value: Any) -> Any:
        if isinstance(value, str):
            pattern = checked_regex(value)
            if pattern.groups < 1:
                raise ValueError("the regex needs one capture group: the value to extract")
            return pattern
        return value

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"json": value}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Extraction:
        given = [x for x in (self.json_path, self.regex, self.header, self.cookie) if x]
        if len(given) != 1:
            raise ValueError("give exactly one of json, regex, header, cookie")
        return self


class HeaderMatch(Model):
    """One of blackbox_exporter's `fail_if_header_matches` / `fail_if_header_not_matches`:
    every value of `header` is matched with `regexp`; a missing header fails unless
    `allow_missing`."""

    header: str = Field(min_length=1)
    regexp: Regex
    allow_missing: bool = False

    @field_validator("regexp", mode="before")
    @classmethod
    def _compile(cls, value: Any) -> Any:
        return checked_regex(value) if isinstance(value, str) else value


class TlsOptions(Model):
    """Client TLS settings for https targets."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    server_name: str | None = None
    min_version: TlsVersion | None = None
    max_version: TlsVersion | None = None

    @model_validator(mode="after")
    def _ordered(self) -> TlsOptions:
        low, high = self.min_version, self.max_version
        if low and high and _TLS_ORDER.index(high) < _TLS_ORDER.index(low):
            raise ValueError(f"max_version {high} is lower than min_version {low}")
        return self


class RequestSpec(Model):
    """One HTTP request and how to judge its response; shared by http checks and flow steps.

    Every template in it (url, headers, body, proxy, the strings of a JSON body) is compiled
    here, once; a request only renders them.
    """

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    url: UrlTemplateStr
    headers: dict[str, TemplateStr] = Field(default_factory=dict)
    body: TemplateStr | None = None
    json_body: JsonBody | None = Field(default=None, alias="json")
    expected_status: list[int | str] = Field(default_factory=lambda: list[int | str](["2xx"]))
    assertions: list[AssertionStr] = Field(default_factory=list, alias="assert")
    extract: dict[str, Extraction] = Field(default_factory=dict)
    follow_redirects: bool = True
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    keep_alive: bool = False
    tls: TlsOptions = Field(default_factory=TlsOptions)
    hostname: str | None = None
    ip_protocol: IpProtocol = "either"
    proxy_url: UrlTemplateStr | None = None
    redirect_headers: list[str] = Field(default_factory=list)
    valid_http_versions: list[HttpVersion] = Field(default_factory=list)
    compression: Compression | None = None
    fail_if_header_matches: list[HeaderMatch] = Field(default_factory=list)
    fail_if_header_not_matches: list[HeaderMatch] = Field(default_factory=list)
    ip_protocol_fallback: bool = False
    # blackbox_exporter's `http_config.enable_http2`: offer h2 by ALPN over TLS (no h2c).
    http2: bool = False
    fail_if_ssl: bool = False
    fail_if_not_ssl: bool = False

    @cached_property
    def needs_json(self) -> bool:
        """Whether judging a response reads its body as JSON (an assertion or an extraction
        with a JSON path): worked out once per request, not per run."""
        return any(a.needs_json for a in self.assertions) or any(
            r.json_path is not None for r in self.extract.values()
        )

    @field_validator("compression")
    @classmethod
    def _decoder_installed(cls, value: Compression | None) -> Compression | None:
        if value == "br" and not brotli_available():
            raise ValueError("compression br needs the brotli package (pip install prober[brotli])")
        return value

    @model_validator(mode="after")
    def _accept_encoding(self) -> RequestSpec:
        if self.compression is None:
            return self
        header = next((t for n, t in self.headers.items() if n.lower() == "accept-encoding"), None)
        if header is not None and not _accept_encoding_allows(header.source, self.compression):
            raise ValueError(
                f"the Accept-Encoding header does not accept compression {self.compression}"
            )
        return self

    @model_validator(mode="after")
    def _fallback_needs_a_family(self) -> RequestSpec:
        if self.ip_protocol_fallback and self.ip_protocol == "either":
            raise ValueError("ip_protocol_fallback needs ip_protocol ip4 or ip6")
        return self

    @model_validator(mode="after")
    def _http2_on_the_lean_path(self) -> RequestSpec:
        """HTTP/2 is spoken by the lean path only; these settings send a request through
        aiohttp, which speaks HTTP/1.1."""
        if not self.http2:
            return self
        for key, given in (
            ("proxy_url", self.proxy_url is not None),
            ("keep_alive", self.keep_alive),
            ("ip_protocol_fallback", self.ip_protocol_fallback),
        ):
            if given:
                raise ValueError(
                    f"http2 cannot be combined with {key} (such requests go through aiohttp,"
                    " which speaks HTTP/1.1 only)"
                )
        return self

    @model_validator(mode="after")
    def _ssl_either_way(self) -> RequestSpec:
        if self.fail_if_ssl and self.fail_if_not_ssl:
            raise ValueError("fail_if_ssl and fail_if_not_ssl together fail every run")
        return self

    @field_validator("expected_status")
    @classmethod
    def _check_status(cls, values: list[int | str]) -> list[int | str]:
        for value in values:
            ok = (isinstance(value, int) and 100 <= value <= 599) or (
                isinstance(value, str) and re.fullmatch(r"[1-5]xx", value)
            )
            if not ok:
                raise ValueError(f"{value!r} is not a status code (100-599) or class like 2xx")
        return values

    @field_validator("redirect_headers")
    @classmethod
    def _check_redirect_headers(cls, names: list[str]) -> list[str]:
        """Names of headers that may follow a redirect to another origin; never credentials."""
        for name in names:
            if name.lower() in NEVER_REDIRECTED:
                raise ValueError(f"{name} never follows a redirect to another origin")
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"{name!r} is not a header name")
        return [name.lower() for name in names]

    @field_validator("extract")
    @classmethod
    def _check_variable_names(cls, values: dict[str, Extraction]) -> dict[str, Extraction]:
        for name in values:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"variable name {name!r} must be letters, digits and _")
        return values

    @model_validator(mode="after")
    def _one_body(self) -> RequestSpec:
        if self.body is not None and self.json_body is not None:
            raise ValueError("give either body or json, not both")
        return self


class Poll(Model):
    """Send a step again until it passes: for a write to become visible (propagation)."""

    every: PositiveDuration = 0.5
    within: PositiveDuration = 10.0
    # A step that passes only after this long marks the run degraded (slow propagation).
    degraded_after: PositiveDuration | None = None


class Step(RequestSpec):
    """One request of a flow."""

    name: Name
    # The component this step exercises, when not its check's (a flow's login step: login).
    component: Name | None = None
    allow_failure: bool = False
    always_run: bool = False
    session: Name | None = None
    session_ttl: PositiveDuration = 300.0
    poll: Poll | None = None

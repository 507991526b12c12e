"""How an HTTP response is read and judged, whatever client fetched it.

Pure functions on what a response showed (status, every header value, the protocol), so the
aiohttp exchange and the lean path (HTTP/1.1 or HTTP/2) judge alike, as blackbox_exporter does: Go's
content length, redirects counted per redirect response, `valid_http_versions`,
`fail_if_ssl` / `fail_if_not_ssl`, `fail_if_header_matches` / `fail_if_header_not_matches`,
Last-Modified as unix time; `expected_status`, the `extract` rules and the assertions.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping
from http.cookies import SimpleCookie

from prober.config.assertions import Response
from prober.config.model import Extraction, HeaderMatch, RequestSpec
from prober.config.secrets import Redactor
from prober.config.templates import MISSING
from prober.result import AssertionOutcome, shown

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Redirects followed at most (the next redirect response is the final one), as blackbox.
MAX_REDIRECTS = 10
_NO_BODY_STATUSES = frozenset({204, 304})

Headers = Mapping[str, tuple[str, ...]]


def is_redirect(status: int, headers: Headers) -> bool:
    """A response a client follows: a redirect status with a Location."""
    return status in REDIRECT_STATUSES and bool(headers.get("location") or headers.get("uri"))


def redirect_count(followed: int, status: int, headers: Headers) -> int:
    """blackbox_exporter's `probe_http_redirects`: the redirect responses received, so a
    final 3xx that was not followed (`follow_redirects: false`, the limit) counts too."""
    return followed + (1 if is_redirect(status, headers) else 0)


def wire_content_length(
    status: int, method: str, header: str | None, stream_ended_with_head: bool = False
) -> int:
    """Content length as Go reads it: 0 for 1xx, 204 and 304 whatever the header says, the
    header's value (bytes on the wire) otherwise, -1 without a valid one; but 0 without a
    header for an HTTP/2 answer to all but a HEAD whose HEADERS frame ended its stream (Go's
    http2 transport: no body can follow)."""
    if status < 200 or status in _NO_BODY_STATUSES:
        return 0
    if header is None:
        return 0 if stream_ended_with_head and method != "HEAD" else -1
    return int(header) if header.strip().isdigit() else -1


def http_version(major: int, minor: int) -> str:
    """The protocol as Go's resp.Proto spells it, what `valid_http_versions` lists."""
    return f"HTTP/{major}.{minor}"


def version_refused(spec: RequestSpec, version: str | None) -> str:
    """Why the response's protocol is not one of `valid_http_versions` ("" if it is)."""
    if not spec.valid_http_versions or version in spec.valid_http_versions:
        return ""
    listed = ", ".join(spec.valid_http_versions)
    return f"{version or 'no version'} is not in valid_http_versions ({listed})"


def ssl_refused(spec: RequestSpec, over_tls: bool) -> str:
    """Why `fail_if_ssl` / `fail_if_not_ssl` fail the final response ("" if neither does),
    judged on its connection as blackbox_exporter judges `resp.TLS`."""
    if over_tls and spec.fail_if_ssl:
        return "the final response came over TLS (fail_if_ssl)"
    if not over_tls and spec.fail_if_not_ssl:
        return "the final response did not come over TLS (fail_if_not_ssl)"
    return ""


def last_modified(headers: Headers) -> float | None:
    """Last-Modified as whole unix seconds, where it parses as an HTTP date (RFC 1123, RFC
    850 or asctime); None otherwise."""
    values = headers.get("last-modified")
    if not values:
        return None
    parsed = email.utils.parsedate_tz(values[0])
    return float(email.utils.mktime_tz(parsed)) if parsed is not None else None


def header_matches(
    spec: RequestSpec, headers: Headers, redactor: Redactor
) -> tuple[AssertionOutcome, ...]:
    """The outcomes of `fail_if_header_matches` (no value may match) and
    `fail_if_header_not_matches` (some value must match); a missing header fails either
    unless the rule says `allow_missing`, which then skips it."""
    if not spec.fail_if_header_matches and not spec.fail_if_header_not_matches:
        return ()
    outcomes: list[AssertionOutcome] = []
    rules = [(r, True) for r in spec.fail_if_header_matches]
    rules += [(r, False) for r in spec.fail_if_header_not_matches]
    for rule, forbidden in rules:
        values = headers.get(rule.header.lower(), ())
        if not values and rule.allow_missing:
            continue
        text = _rule_text(rule, forbidden)
        if not values:
            outcomes.append(AssertionOutcome(text, False, "<missing>"))
            continue
        found = any(rule.regexp.found_in(value) for value in values)
        outcomes.append(
            AssertionOutcome(text, found != forbidden, shown(", ".join(values), redactor))
        )
    return tuple(outcomes)


def _rule_text(rule: HeaderMatch, forbidden: bool) -> str:
    key = "fail_if_header_matches" if forbidden else "fail_if_header_not_matches"
    return f'{key}: {rule.header} "{rule.regexp.pattern}"'


def status_expected(status: int, expected: list[int | str]) -> bool:
    """Whether the status is one of `expected_status` (codes, or classes like "2xx")."""
    for item in expected:
        if isinstance(item, int):
            if status == item:
                return True
        elif status // 100 == int(item[0]):
            return True
    return False


def extracted_value(rule: Extraction, response: Response, cookies: SimpleCookie) -> str | None:
    """What an `extract` rule reads from the response; None when the response lacks it."""
    if rule.json_path is not None:
        found = rule.json_path.find(response.document)
        if found is MISSING or found is None:
            return None
        return found if isinstance(found, str) else json.dumps(found)
    if rule.header is not None:
        values = response.headers.get(rule.header.lower())
        return values[-1] if values else None  # a repeated header: its last value
    if rule.cookie is not None:
        morsel = cookies.get(rule.cookie)
        return morsel.value if morsel is not None else None
    assert rule.regex is not None
    return rule.regex.first_group(response.body.decode("utf-8", "replace"))


def judged(
    spec: RequestSpec, response: Response, redactor: Redactor
) -> tuple[tuple[AssertionOutcome, ...], bool]:
    """The header matchers' and assertions' outcomes, and whether a regex among them failed
    (`probe_failed_due_to_regex`); nothing is built for a check that has neither."""
    matched = header_matches(spec, response.headers, redactor)
    if not spec.assertions:
        return matched, bool(matched) and any(not o.passed for o in matched)
    asserted = tuple(a.evaluate(response, redactor) for a in spec.assertions)
    regex_failed = any(not o.passed for o in matched) or any(
        a.matches_regex and not o.passed for a, o in zip(spec.assertions, asserted, strict=True)
    )
    return matched + asserted, regex_failed

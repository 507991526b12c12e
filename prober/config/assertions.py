"""A small assertion language, parsed once at load and evaluated per response.

status == 200        status == 2xx        latency < 300ms
header.content-type ~= "json"             body contains "ok"
$.status == "ok"     $.token exists       len($.posts) > 0
tls.days_left > 14   tls.version == "TLS 1.3"
"""

from __future__ import annotations

import json
import operator
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prober.config.secrets import NO_SECRETS, Redactor
from prober.config.templates import (
    MISSING,
    JsonPath,
    JsonPathError,
    Regex,
    RegexError,
    compile_regex,
    parse_json_path,
    value_length,
)
from prober.result import AssertionOutcome, shown

_EXPRESSION = re.compile(
    r"^\s*(?P<subject>status|latency|body|tls\.days_left|tls\.version|header\.[A-Za-z0-9_-]+"
    r"|len\([^)]*\)|\$\S*)"
    r"\s*(?P<op>==|!=|<=|>=|<|>|~=|!~|contains|exists|missing)\s*(?P<value>.*?)\s*$"
)
_STATUS_CLASS = re.compile(r"^([1-5])xx$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_ORDER_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_DAY = 86400.0
_TLS_SUBJECTS = ("tls.days_left", "tls.version")


class AssertionSyntaxError(ValueError):
    """An assertion that cannot be parsed; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Response:
    """What an assertion may look at; the JSON document is decoded at most once.

    `headers` holds every value of each header, by lower-case name, in the order received
    (`response_headers` builds it).
    """

    status: int
    latency: float
    headers: Mapping[str, tuple[str, ...]]
    body: bytes
    document: Any = MISSING
    tls_expiry: float | None = None
    tls_version: str | None = None


@dataclass(frozen=True, slots=True)
class Assertion:
    """One parsed condition. `subject` says what to read, `op` how to compare."""

    text: str
    subject: str
    op: str
    expected: Any
    path: JsonPath | None = None
    header: str = ""
    regex: Regex | None = None

    @property
    def needs_json(self) -> bool:
        return self.path is not None

    @property
    def matches_regex(self) -> bool:
        """A regex on a header or the body: what blackbox_exporter's
        `probe_failed_due_to_regex` is about."""
        return self.regex is not None and self.subject in ("header", "body")

    def evaluate(self, response: Response, redactor: Redactor = NO_SECRETS) -> AssertionOutcome:
        """Judge the response; the value seen is shown with `redactor`'s secrets hidden.

        A repeated header is judged on every value: `!~` and `!=` pass only if every value
        does (a forbidden value anywhere fails), the other operators if any value does.
        """
        actual = self._read(response)
        if isinstance(actual, tuple):
            results = [self._compare(value) for value in actual]
            passed = all(results) if self.op in ("!~", "!=") else any(results)
            return AssertionOutcome(self.text, passed, _show(", ".join(actual), redactor))
        passed = self._compare(actual)
        return AssertionOutcome(self.text, passed, _show(actual, redactor))

    def _read(self, response: Response) -> Any:
        if self.subject == "status":
            return response.status
        if self.subject == "latency":
            return response.latency
        if self.subject == "header":
            return response.headers.get(self.header) or MISSING
        if self.subject == "body":
            return response.body.decode("utf-8", "replace")
        if self.subject == "tls.days_left":
            # Certificate expiry is a calendar date, so wall time is the right clock here.
            expiry = response.tls_expiry
            return MISSING if expiry is None else (expiry - time.time()) / _DAY
        if self.subject == "tls.version":
            return MISSING if response.tls_version is None else response.tls_version
        assert self.path is not None
        found = self.path.find(response.document)
        return value_length(found) if self.subject == "len" else found

    def _compare(self, actual: Any) -> bool:
        if self.op == "exists":
            return actual is not MISSING
        if self.op == "missing":
            return actual is MISSING
        if actual is MISSING:
            return False
        if self.regex is not None:
            found = self.regex.found_in(actual if isinstance(actual, str) else json.dumps(actual))
            return found == (self.op == "~=")
        if self.op == "contains":
            return _contains(actual, self.expected)
        if self.op in ("==", "!="):
            return _equals(actual, self.expected) == (self.op == "==")
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return False
        return _ORDER_OPS[self.op](actual, self.expected)


def _equals(actual: Any, expected: Any) -> bool:
    if isinstance(expected, StatusClass):
        return isinstance(actual, int) and actual // 100 == expected.hundreds
    return bool(actual == expected and type(actual) is type(expected)) or (
        isinstance(actual, int | float)
        and isinstance(expected, int | float)
        and not isinstance(actual, bool)
        and not isinstance(expected, bool)
        and actual == expected
    )


def response_headers(items: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """Every value of each header by lower-case name, in order: what `Response` holds."""
    headers: dict[str, tuple[str, ...]] = {}
    for name, value in items:
        key = name.lower()
        headers[key] = (*headers.get(key, ()), value)
    return headers


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list):
        return any(_equals(item, expected) for item in actual)
    if isinstance(actual, dict):
        return expected in actual
    return False


def _show(actual: Any, redactor: Redactor) -> str:
    if actual is MISSING:
        return "<missing>"
    if isinstance(actual, float):
        return f"{actual:.4f}"
    return shown(actual if isinstance(actual, str) else json.dumps(actual), redactor)


@dataclass(frozen=True, slots=True)
class StatusClass:
    """`2xx`: any status in that hundred."""

    hundreds: int


def parse_assertion(text: str) -> Assertion:
    """Parse one assertion string; raise AssertionSyntaxError with the reason."""
    match = _EXPRESSION.match(text)
    if match is None:
        raise AssertionSyntaxError(
            f"cannot parse assertion {text!r}: expected SUBJECT OP VALUE, where SUBJECT is "
            "status, latency, body, tls.days_left, tls.version, header.NAME, $.json.path "
            "or len($.path)"
        )
    subject, op, raw = match.group("subject", "op", "value")
    if op in ("exists", "missing"):
        if raw:
            raise AssertionSyntaxError(f"{text!r}: '{op}' takes no value")
        if subject in ("status", "latency", "body"):
            raise AssertionSyntaxError(f"{text!r}: '{op}' needs a header or a JSON path")
    elif not raw:
        raise AssertionSyntaxError(f"{text!r}: '{op}' needs a value")
    kind, path, header = _parse_subject(text, subject)
    expected = None if op in ("exists", "missing") else _parse_value(text, kind, op, raw)
    regex = None
    if op in ("~=", "!~"):
        if not isinstance(expected, str):
            raise AssertionSyntaxError(f"{text!r}: '{op}' needs a quoted regular expression")
        try:
            regex = compile_regex(expected)
        except RegexError as exc:
            raise AssertionSyntaxError(f"{text!r}: {exc}") from None
    return Assertion(text.strip(), kind, op, expected, path, header, regex)


def _parse_subject(text: str, subject: str) -> tuple[str, JsonPath | None, str]:
    if subject.startswith("header."):
        return "header", None, subject.removeprefix("header.").lower()
    if subject in ("status", "latency", "body", *_TLS_SUBJECTS):
        return subject, None, ""
    inner = subject[4:-1].strip() if subject.startswith("len(") else subject
    try:
        path = parse_json_path(inner)
    except JsonPathError as exc:
        raise AssertionSyntaxError(f"{text!r}: {exc}") from None
    return ("len" if subject.startswith("len(") else "json"), path, ""


def _parse_value(text: str, kind: str, op: str, raw: str) -> Any:
    if kind == "latency":
        match = _DURATION.match(raw)
        if match is None or op not in _ORDER_OPS:
            raise AssertionSyntaxError(
                f"{text!r}: latency compares with <, <=, >, >= and a duration such as 300ms or 1.5s"
            )
        return float(match.group(1)) * _UNITS[match.group(2)]
    status_class = _STATUS_CLASS.match(raw)
    if kind == "status" and status_class and op in ("==", "!="):
        return StatusClass(int(status_class.group(1)))
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        if op in _ORDER_OPS:
            raise AssertionSyntaxError(f"{text!r}: '{op}' needs a number, not {raw!r}") from None
        return raw
    if op in _ORDER_OPS and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise AssertionSyntaxError(f"{text!r}: '{op}' needs a number, not {raw!r}")
    return value

"""`${name}` templates (JSON bodies too), a small JSON path, `len()` of any JSON value, and
user regexes.

Everything here is parsed once at config load; evaluation only walks prebuilt objects.
Template values may be `Secret`s: rendering, which writes the request, is what reveals them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import quote

import re2

from prober.config.located import KeyPath
from prober.config.secrets import Secret

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)(?::-(.*?))?\}")
_PATH_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[['\"]([^'\"]+)['\"]\]")


# What a template's names resolve to: extracted variables and environment values as text,
# secrets still typed (their str() is `***`) until a template is rendered into a request.
TemplateValues: TypeAlias = Mapping[str, "str | Secret"]


class TemplateError(ValueError):
    """A template names a variable that has no value."""


@dataclass(frozen=True, slots=True)
class Placeholder:
    """`${name}` or `${name:-default}`; `quoted` values are percent-encoded where they land."""

    name: str
    default: str | None
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Template:
    """A string with `${name}` / `${name:-default}` placeholders, split once."""

    parts: tuple[str | Placeholder, ...]
    source: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts if isinstance(p, Placeholder))

    def render(self, values: TemplateValues) -> str:
        """Fill every placeholder from `values` (secrets revealed), else its default, else fail."""
        if len(self.parts) == 1 and isinstance(self.parts[0], str):
            return self.parts[0]
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = values.get(part.name, part.default)
            if value is None:
                raise TemplateError(f"variable '{part.name}' has no value")
            text = value.reveal() if isinstance(value, Secret) else value
            out.append(_percent_encoded(text) if part.quoted else text)
        return "".join(out)


def _percent_encoded(value: str) -> str:
    """Every byte but the unreserved ones encoded, so a value stays one URL component."""
    try:
        return quote(value, safe="")
    except UnicodeEncodeError:
        raise TemplateError("a value put into the URL is not valid UTF-8 text") from None


def compile_template(text: str) -> Template:
    """Split `text` into literal parts and placeholders."""
    parts: list[str | Placeholder] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > pos:
            parts.append(text[pos : match.start()])
        parts.append(Placeholder(match.group(1), match.group(2)))
        pos = match.end()
    if pos < len(text) or not parts:
        parts.append(text[pos:])
    return Template(tuple(parts), text)


@dataclass(frozen=True, slots=True)
class _JsonObject:
    """A JSON object with templates somewhere inside: its keys and compiled values."""

    items: tuple[tuple[Any, Any], ...]


@dataclass(frozen=True, slots=True)
class _JsonArray:
    """A JSON array with templates somewhere inside: its compiled items."""

    items: tuple[Any, ...]


def _compile_json(value: Any) -> Any:
    """Strings with `${` as Templates, containers holding one as _JsonObject/_JsonArray, and
    everything else as it is (shared, never copied: rendering does not change it)."""
    if isinstance(value, str):
        return compile_template(value) if "${" in value else value
    if isinstance(value, dict):
        items = tuple((key, _compile_json(item)) for key, item in value.items())
        return _JsonObject(items) if any(_has_template(v) for _, v in items) else value
    if isinstance(value, list):
        parts = tuple(_compile_json(item) for item in value)
        return _JsonArray(parts) if any(_has_template(p) for p in parts) else value
    return value


def _has_template(node: Any) -> bool:
    return isinstance(node, Template | _JsonObject | _JsonArray)


def _render_json(node: Any, values: TemplateValues) -> Any:
    if isinstance(node, Template):
        return node.render(values)
    if isinstance(node, _JsonObject):
        return {key: _render_json(item, values) for key, item in node.items}
    if isinstance(node, _JsonArray):
        return [_render_json(item, values) for item in node.items]
    return node


def _json_placeholders(node: Any, path: KeyPath) -> Iterator[tuple[KeyPath, Template]]:
    if isinstance(node, Template):
        yield path, node
    elif isinstance(node, _JsonObject):
        for key, item in node.items:
            yield from _json_placeholders(item, (*path, key))
    elif isinstance(node, _JsonArray):
        for index, item in enumerate(node.items):
            yield from _json_placeholders(item, (*path, index))


@dataclass(frozen=True, slots=True)
class JsonTemplate:
    """A JSON request body whose strings may hold `${name}`: split once at load; a request
    renders only the parts that hold placeholders."""

    source: Any
    compiled: Any = field(compare=False, repr=False)

    def render(self, values: TemplateValues) -> Any:
        """The JSON value with every placeholder filled (see Template.render)."""
        return _render_json(self.compiled, values)

    def templates(self) -> Iterator[tuple[KeyPath, Template]]:
        """Each string with placeholders and its key path inside the body."""
        return _json_placeholders(self.compiled, ())


def compile_json_template(value: Any) -> JsonTemplate:
    """Compile a JSON body (any JSON value) once."""
    return JsonTemplate(value, _compile_json(value))


# Where a URL template is while it is read left to right; placeholders in the last four
# are percent-encoded.
_BASE, _AFTER_BASE, _SCHEME, _AUTHORITY, _USERINFO, _PATH, _QUERY, _FRAGMENT = range(8)


def compile_url_template(text: str) -> Template:
    """A URL template whose values are percent-encoded where they land.

    A value in the userinfo, the path, the query or the fragment is one component: `a&b`
    stays one query value, `a/b` one path segment, `p@ss/word` one password. A value at the
    start (a base URL such as `${PLATFORM_URL}/api`) or in the host and port goes in as it is.
    """
    template = compile_template(text)
    state = _BASE
    parts: list[str | Placeholder] = []
    for index, part in enumerate(template.parts):
        if isinstance(part, str):
            state = _after_literal(state, part)
            parts.append(part)
            continue
        if state == _AUTHORITY and _userinfo_follows(template.parts[index + 1 :]):
            state = _USERINFO
        parts.append(Placeholder(part.name, part.default, state >= _USERINFO))
        if state == _BASE:
            state = _AFTER_BASE
    return Template(tuple(parts), text)


def _after_literal(state: int, literal: str) -> int:
    """The URL state after reading `literal` in `state`."""
    if state in (_BASE, _AFTER_BASE, _SCHEME):
        _, sep, rest = literal.partition("://")
        if not sep:
            # What follows a base URL is its path, query or fragment.
            return _after_literal_path(_PATH, literal) if state == _AFTER_BASE else _SCHEME
        state, literal = _AUTHORITY, rest
    if state in (_AUTHORITY, _USERINFO):
        if "@" in literal:
            state, literal = _AUTHORITY, literal.rsplit("@", 1)[1]
        end = _authority_end(literal)
        if end == len(literal):
            return state
        return _after_literal_path(_AUTHORITY_ENDS[literal[end]], literal[end:])
    return _after_literal_path(state, literal)


def _after_literal_path(state: int, literal: str) -> int:
    """Path -> query at `?`, anything -> fragment at `#`."""
    if "#" in literal:
        return _FRAGMENT
    if state == _PATH and "?" in literal:
        return _QUERY
    return state


_AUTHORITY_ENDS = {"/": _PATH, "?": _QUERY, "#": _FRAGMENT}


def _authority_end(literal: str) -> int:
    """Where the authority ends in `literal`: its first `/`, `?` or `#` (else its length)."""
    return min((literal.index(c) for c in _AUTHORITY_ENDS if c in literal), default=len(literal))


def _userinfo_follows(rest: tuple[str | Placeholder, ...]) -> bool:
    """Whether an `@` comes before the authority ends: then the placeholder is userinfo."""
    for part in rest:
        if isinstance(part, str):
            end = _authority_end(part)
            if "@" in part[:end]:
                return True
            if end < len(part):
                return False
    return False


class JsonPathError(ValueError):
    """A JSON path that cannot be parsed."""


# What a JSON path finds where the document has nothing; never equal to a JSON value.
MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A parsed `$.a.b[0]['c-d']` path; `find` returns MISSING when absent."""

    tokens: tuple[str | int, ...]
    source: str

    def find(self, document: Any) -> Any:
        node = document
        for token in self.tokens:
            if isinstance(token, int):
                if not isinstance(node, list) or token >= len(node):
                    return MISSING
                node = node[token]
            else:
                if not isinstance(node, dict) or token not in node:
                    return MISSING
                node = node[token]
        return node


def parse_json_path(text: str) -> JsonPath:
    """Parse the JSON path subset prober supports: `$`, `.key`, `[0]`, `['key']`."""
    source = text.strip()
    if not source.startswith("$"):
        raise JsonPathError(f"JSON path {source!r} must start with '$'")
    tokens: list[str | int] = []
    pos = 1
    while pos < len(source):
        match = _PATH_TOKEN.match(source, pos)
        if match is None:
            raise JsonPathError(f"JSON path {source!r}: cannot parse at {source[pos:]!r}")
        name, index, quoted = match.groups()
        tokens.append(int(index) if index is not None else (name or quoted))
        pos = match.end()
    return JsonPath(tuple(tokens), source)


class RegexError(ValueError):
    """A regular expression RE2 cannot compile; the message says why, without the pattern."""


# RE2's messages end with the offending part of the pattern (config text that may hold an
# environment value): keep the kind of error, and name the unsupported constructs.
_RE2_UNSUPPORTED = (
    ("(?=", "lookahead (?=...) is not supported"),
    ("(?!", "negative lookahead (?!...) is not supported"),
    ("(?<=", "lookbehind (?<=...) is not supported"),
    ("(?<!", "negative lookbehind (?<!...) is not supported"),
    ("(?P=", "backreferences are not supported"),
    ("\\Z", "\\Z is written \\z in RE2"),
)


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print each error to stderr itself
    return options


_RE2_OPTIONS = _options()


@dataclass(frozen=True, slots=True)
class Regex:
    """A user's regular expression, compiled once with RE2: matching takes linear time.

    RE2 is the syntax of Go's regexp, which blackbox_exporter and Prometheus users already
    write; it has no backreferences or lookaround, the features that make backtracking
    engines take exponential time.
    """

    pattern: str
    groups: int
    compiled: Any = field(compare=False, repr=False)

    def found_in(self, text: str) -> bool:
        """Whether the regex matches anywhere in `text`."""
        return self.compiled.search(text) is not None

    def first_group(self, text: str) -> str | None:
        """The first capture group of the first match; None without a match or group."""
        match = self.compiled.search(text)
        group = match.group(1) if match is not None else None
        return group if isinstance(group, str) else None


def compile_regex(pattern: str) -> Regex:
    """Compile a user's regex with RE2; raise RegexError saying why it cannot be used."""
    try:
        compiled = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        raise RegexError(_re2_message(pattern, exc)) from None
    return Regex(pattern, int(compiled.groups), compiled)


def _re2_message(pattern: str, exc: Exception) -> str:
    for construct, message in _RE2_UNSUPPORTED:
        if construct in pattern:
            return f"bad regular expression: {message} (RE2 syntax)"
    raw = exc.args[0] if exc.args else b""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    kind = text.split(":", 1)[0].strip() or "cannot compile"
    if kind == "invalid escape sequence" and re.search(r"\\[1-9]", pattern):
        kind = "backreferences (\\1) are not supported"
    return f"bad regular expression: {kind} (RE2 syntax)"


def value_length(value: Any) -> int:
    """len() that works on any JSON value: numbers and booleans by their text, null as 0."""
    if value is None or value is MISSING:
        return 0
    if isinstance(value, str | list | dict):
        return len(value)
    return len(str(value))

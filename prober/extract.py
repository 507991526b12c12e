"""`${name}` templates, a small JSON path, and `len()` of any JSON value.

Everything here is parsed once at config load; evaluation only walks prebuilt objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)(?::-(.*?))?\}")
_PATH_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[['\"]([^'\"]+)['\"]\]")


class TemplateError(ValueError):
    """A template names a variable that has no value."""


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str
    default: str | None


@dataclass(frozen=True, slots=True)
class Template:
    """A string with `${name}` / `${name:-default}` placeholders, split once."""

    parts: tuple[str | Placeholder, ...]
    source: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts if isinstance(p, Placeholder))

    def render(self, values: Mapping[str, str]) -> str:
        """Fill every placeholder from `values`, else its default, else fail."""
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
            out.append(value)
        return "".join(out)


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


def value_length(value: Any) -> int:
    """len() that works on any JSON value: numbers and booleans by their text, null as 0."""
    if value is None or value is MISSING:
        return 0
    if isinstance(value, str | list | dict):
        return len(value)
    return len(str(value))

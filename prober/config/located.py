"""Located errors: `FILE:LINE: key.path: message`, for every input prober reads.

The config, the web config and the simulator's fault specs and scenarios all turn pydantic's
errors into these through `validation_issues`, so a mistake reads the same wherever it is made.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

KeyPath = tuple[str | int, ...]

UNKNOWN_KEY = "unknown key"
# pydantic's marker in the location of a dict key's own error: the key path names the key.
_KEY_MARKER = "[key]"
# Error types whose message already says what is wrong with the value: no `(got ...)`.
_SAYS_WHY = frozenset({"value_error", "missing", "extra_forbidden"})


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in an input, located as precisely as the input allows."""

    file: str
    message: str
    line: int | None = None
    check: str | None = None
    key: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        parts = [where] if where else []
        if self.check:
            parts.append(f"check {self.check!r}")
        if self.key:
            parts.append(self.key)
        return ": ".join([*parts, self.message])


class ConfigError(Exception):
    """The input cannot be used; `issues` lists every located problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


def key_path(path: Iterable[str | int]) -> str:
    """`checks[0].headers.Authorization`: indexes in brackets, keys joined by dots."""
    out = ""
    for part in path:
        # YAML allows keys of any type (null, numbers): show them as text.
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class LocatedData:
    """Input data and the 1-based line of each key path in it (none for JSON or flags)."""

    file: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of `path`, else of its nearest parent that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def issue(self, path: KeyPath, message: str) -> ConfigIssue:
        """A located issue at `path`."""
        return ConfigIssue(self.file, message, self.line_of(path), key=key_path(path))


def validation_issues(
    exc: ValidationError,
    source: LocatedData,
    prefix: KeyPath = (),
    *,
    union_tags: Collection[str] = (),
    show_input: bool = False,
    unknown_key: str = UNKNOWN_KEY,
) -> list[ConfigIssue]:
    """One located issue per pydantic error in `source`, sorted by line.

    `prefix` is where the validated value sits in `source.data`; `union_tags` are the tags
    pydantic adds to the location of a tagged union's member (not keys of the data). Values
    are never shown unless `show_input` (input that cannot hold a secret, such as the sim's).
    """
    issues = []
    for error in exc.errors(include_url=False, include_input=show_input):
        path = data_path(source.data, (*prefix, *error["loc"]), union_tags)
        issues.append(source.issue(path, _message(error, show_input, unknown_key)))
    return sorted(issues, key=lambda issue: issue.line or 0)


def _message(error: ErrorDetails, show_input: bool, unknown_key: str) -> str:
    if error["type"] == "extra_forbidden":
        return unknown_key
    message = str(error["msg"]).removeprefix("Value error, ")
    if show_input and error["type"] not in _SAYS_WHY:
        message += f" (got {error['input']!r})"
    return message


def data_path(data: Any, loc: KeyPath, union_tags: Collection[str] = ()) -> KeyPath:
    """A pydantic error location as a key path of `data`, without the parts pydantic adds."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if part == _KEY_MARKER:
            continue
        if isinstance(node, dict) and part in union_tags and part not in node:
            continue
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        path.append(part)
    return tuple(path)


def in_file_order(issues: Iterable[ConfigIssue], files: list[str]) -> list[ConfigIssue]:
    """Issues by file (in the order `files` were read), then by line."""
    rank = {file: i for i, file in enumerate(files)}
    return sorted(issues, key=lambda i: (rank.get(i.file, -1), i.line or 0))


def error_below(title: str, errors: Iterable[tuple[KeyPath, str, Any]]) -> ValidationError:
    """A ValidationError for a validator to raise, each error located at a path below the
    value it validates (pydantic adds the validator's own location in front).

    For a rule about a part of the value: `faults.login.propagation_delay_ms`, not `faults`.
    """
    details = [
        InitErrorDetails(type=PydanticCustomError("value_error", message), loc=path, input=value)
        for path, message, value in errors
    ]
    return ValidationError.from_exception_data(title, details)

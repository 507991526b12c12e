"""The field types every config model uses: durations, names, labels, regexes, templates and
assertions, each parsed once when the config is validated; and `Model`, their base."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from prober.config.assertions import Assertion, parse_assertion
from prober.config.templates import (
    JsonTemplate,
    Regex,
    RegexError,
    Template,
    compile_json_template,
    compile_regex,
    compile_template,
    compile_url_template,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_LABELS = frozenset(
    {
        "check",
        "component",
        "step",
        "phase",
        "reason",
        "result",
        "failed_step",
        "le",
        "job",
        "instance",
        "state",
        "session",
        "scope",
        "version",
    }
)


class Model(BaseModel):
    """Base of every config model: unknown keys are errors and values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


def parse_duration(value: Any) -> Any:
    """`15s`, `500ms`, `1m`, `2h` or a number of seconds -> seconds as float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15s, 500ms or 1m")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError("expected a duration such as 15s, 500ms or 1m")


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def valid_name(value: str) -> bool:
    """Letters, digits, '.', '_' or '-', at most 64: check, step, session and account names."""
    return bool(_NAME.match(value))


def _valid_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r}: use letters, digits, '.', '_' or '-' (max 64)")
    return value


def _valid_labels(labels: dict[str, str]) -> dict[str, str]:
    """Label names must be Prometheus-valid and must not shadow prober's own labels.

    Values must be text a scrape can encode: an environment value that is not UTF-8 (read
    with surrogateescape) would otherwise abort every scrape halfway through.
    """
    for name, value in labels.items():
        if not _LABEL.match(name) or name.startswith("__"):
            raise ValueError(f"label name {name!r} is not a valid Prometheus label name")
        if name == "component":
            raise ValueError(
                "label name 'component' is reserved by prober: "
                "set it with the check's `component:` key instead"
            )
        if name in RESERVED_LABELS:
            raise ValueError(f"label name {name!r} is reserved by prober (it sets it itself)")
        if not _is_utf8(value):
            raise ValueError(f"label {name!r}: the value is not valid UTF-8 text")
    return labels


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def checked_regex(value: str) -> Regex:
    """A user's regex compiled with RE2; why it cannot be used is a validation error."""
    try:
        return compile_regex(value)
    except RegexError as exc:
        raise ValueError(str(exc)) from None


def _compile_regexes(values: Any) -> Any:
    if not isinstance(values, list):
        return values
    return [checked_regex(v) if isinstance(v, str) else v for v in values]


Name = Annotated[str, AfterValidator(_valid_name)]
Labels = Annotated[dict[str, str], AfterValidator(_valid_labels)]
Regexes = Annotated[list[Regex], BeforeValidator(_compile_regexes)]


def _to_template(value: Any) -> Any:
    if isinstance(value, Template):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return compile_template(value)


_BAD_PORT = "the URL's port is not a number from 1 to 65535"


def _to_url_template(value: Any) -> Any:
    """A URL template whose literal port, if any, is a port number."""
    if isinstance(value, Template):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a string")
    template = compile_url_template(value)
    # Each placeholder as a harmless "1": only what the file itself says is checked here.
    sample = template.render(dict.fromkeys(template.names, "1"))
    try:
        parts = urlsplit(sample)
        port = parts.port
    except ValueError as exc:
        if "port" in str(exc).lower():
            raise ValueError(_BAD_PORT) from None
        raise ValueError("the URL's host is not valid") from None
    if port == 0:
        raise ValueError(_BAD_PORT)
    return template


def _to_json_template(value: Any) -> Any:
    """A JSON body as written (any JSON value) compiled into a JsonTemplate; null is none."""
    if value is None or isinstance(value, JsonTemplate):
        return value
    return compile_json_template(value)


def _to_assertion(value: Any) -> Any:
    if isinstance(value, Assertion):
        return value
    if not isinstance(value, str):
        raise ValueError("expected an assertion string such as 'status == 200'")
    return parse_assertion(value)


TemplateStr = Annotated[Template, BeforeValidator(_to_template)]
UrlTemplateStr = Annotated[Template, BeforeValidator(_to_url_template)]
JsonBody = Annotated[JsonTemplate, BeforeValidator(_to_json_template)]
AssertionStr = Annotated[Assertion, BeforeValidator(_to_assertion)]

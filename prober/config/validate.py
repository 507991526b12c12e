"""Validate config documents with pydantic: a file's own keys, then each check on its own.

One bad check hides no other's errors, and bad global keys hide no check's: one run of
`prober validate` reports every problem, each located (`validation_issues`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from prober.config.located import ConfigIssue, KeyPath, validation_issues
from prober.config.model import CHECK_KINDS, Check, CheckFile, GlobalConfig
from prober.config.model_checks import TimingDefaults, timing_context
from prober.config.read import ConfigDocument

_CHECK_ADAPTER: TypeAdapter[Check] = TypeAdapter(Check)


@dataclass(frozen=True, slots=True)
class CheckEntry:
    """One check as written (`raw`, for the rules across fields) and as validated (or None)."""

    doc: ConfigDocument
    index: int
    raw: Any
    check: Check | None


def _report(
    doc: ConfigDocument, exc: ValidationError, prefix: KeyPath, issues: list[ConfigIssue]
) -> None:
    """Add pydantic's errors about the value at `prefix` in `doc` to `issues`, located."""
    issues.extend(validation_issues(exc, doc, prefix, union_tags=CHECK_KINDS))


def validate_settings(doc: ConfigDocument, issues: list[ConfigIssue]) -> GlobalConfig:
    """prober.yml's own keys; the invalid ones are reported and left out, so that the checks
    can still be validated against the rest."""
    data = _own_keys(doc)
    try:
        return GlobalConfig.model_validate(data)
    except ValidationError as exc:
        _report(doc, exc, (), issues)
        return _lenient_settings(data, exc)


def _lenient_settings(data: dict[Any, Any], exc: ValidationError) -> GlobalConfig:
    """The settings without the keys `exc` found invalid: enough to go on finding errors."""
    while True:
        bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
        if not bad & set(data):
            return GlobalConfig()
        data = {k: v for k, v in data.items() if k not in bad}
        try:
            return GlobalConfig.model_validate(data)
        except ValidationError as again:
            exc = again


def validate_check_file(
    doc: ConfigDocument, timing: TimingDefaults, issues: list[ConfigIssue]
) -> list[CheckEntry]:
    """A file under checks/: its own keys (only `checks` is known) and its checks."""
    try:
        CheckFile.model_validate(_own_keys(doc))
    except ValidationError as exc:
        _report(doc, exc, (), issues)
    return validate_checks(doc, timing, issues)


def validate_checks(
    doc: ConfigDocument, timing: TimingDefaults, issues: list[ConfigIssue]
) -> list[CheckEntry]:
    """Every check of the file, each validated on its own with `timing` as its defaults."""
    raw_checks = doc.data.get("checks") or []
    if not isinstance(raw_checks, list):
        issues.append(doc.issue(("checks",), "must be a list of checks"))
        return []
    context = timing_context(timing)
    entries: list[CheckEntry] = []
    for index, raw in enumerate(raw_checks):
        check: Check | None = None
        try:
            check = _CHECK_ADAPTER.validate_python(raw, context=context)
        except ValidationError as exc:
            _report(doc, exc, ("checks", index), issues)
        entries.append(CheckEntry(doc, index, raw, check))
    return entries


def _own_keys(doc: ConfigDocument) -> dict[Any, Any]:
    return {key: value for key, value in doc.data.items() if key != "checks"}

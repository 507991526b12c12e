"""The rules across fields and files, and what a check needs filled in before it runs.

Checks arrive validated (or not: the rules run on what was written too, so one pass reports
everything) and leave resolved: names unique, every attempt within the interval, every
`${name}` known, a pool's account names read. The result is the frozen checks the daemon runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from prober.config.located import ConfigIssue, KeyPath
from prober.config.model import (
    FlowCheck,
    GrpcCheck,
    HttpCheck,
    RequestSpec,
    WebsocketCheck,
    check_kind,
    valid_name,
)
from prober.config.model_checks import Check, TimingDefaults, written_duration
from prober.config.read import ConfigDocument, read_text, unreadable
from prober.config.secrets import Secret
from prober.config.templates import Template, compile_json_template, compile_template
from prober.config.validate import CheckEntry

# A retry waits this long when the check sets no retry_backoff (CheckBase's default).
_DEFAULT_BACKOFF = 0.2
# The fields of each kind that stay `${name}` templates until a run (config/substitute.py
# leaves them): an http check's and a flow step's request, a websocket check's URL and
# headers, a grpc check's metadata. Dicts hold a template per entry.
_REQUEST_FIELDS = ("url", "proxy_url", "body", "headers", "json")
_TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "http": _REQUEST_FIELDS,
    "flow": _REQUEST_FIELDS,
    "websocket": ("url", "headers"),
    "grpc": ("metadata",),
}


def resolve_checks(
    entries: list[CheckEntry],
    timing: TimingDefaults,
    known_names: set[str],
    issues: list[ConfigIssue],
) -> list[Check]:
    """Apply the rules across fields and files to every check, valid or not; the valid ones,
    resolved, in the order written."""
    resolved: list[Check] = []
    seen: dict[str, str] = {}
    for entry in entries:
        doc, path, raw = entry.doc, ("checks", entry.index), entry.raw
        if not isinstance(raw, dict):
            continue
        name = raw.get("name")
        if isinstance(name, str) and name in seen:
            message = f"check name {name!r} is also used in {seen[name]}"
            issues.append(doc.issue((*path, "name"), message))
            continue
        if isinstance(name, str):
            seen[name] = doc.file
        _check_timing(doc, path, raw, timing, issues)
        _check_templates(doc, path, raw, known_names, issues)
        check = entry.check
        if isinstance(check, FlowCheck) and check.accounts is not None:
            names = _account_names(doc, path, check, issues)
            check = check.model_copy(update={"account_names": names})
        if check is not None:
            resolved.append(check)
    return resolved


def _account_names(
    doc: ConfigDocument, path: KeyPath, check: FlowCheck, issues: list[ConfigIssue]
) -> tuple[str, ...]:
    """The pool's names: listed, from the pattern, or one per line of its file."""
    pool = check.accounts
    assert pool is not None
    names = pool.expand()
    where = (*path, "accounts", "file")
    if pool.file is not None:
        file = Path(pool.file)
        if not file.is_absolute():
            file = Path(doc.file).parent / file
        try:
            text = read_text(file)
        except (OSError, UnicodeDecodeError) as exc:
            reason = unreadable(exc)
            issues.append(doc.issue(where, f"cannot read accounts file {file}: {reason}"))
            return ()
        lines = [line.strip() for line in text.splitlines()]
        names = tuple(line for line in lines if line and not line.startswith("#"))
        bad = next((n for n in names if not valid_name(n)), None)
        if bad is not None or not names:
            message = "has no account names" if not names else "has a name that is not valid"
            issues.append(doc.issue(where, f"accounts file {file} {message}"))
            return ()
        if check.fanout > len(names):
            message = f"fanout {check.fanout} is more than the {len(names)} accounts"
            issues.append(doc.issue((*path, "fanout"), message))
    return names


def _check_timing(
    doc: ConfigDocument,
    path: KeyPath,
    raw: dict[str, Any],
    timing: TimingDefaults,
    issues: list[ConfigIssue],
) -> None:
    """Every attempt, with retries and backoff, must end before the next run is due."""
    retries = raw.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
        return
    interval = written_duration(raw.get("interval")) or timing.interval
    timeout = written_duration(raw.get("timeout")) or timing.timeout_for(interval)
    backoff = written_duration(raw.get("retry_backoff"))
    budget = timeout * (retries + 1) + (_DEFAULT_BACKOFF if backoff is None else backoff) * retries
    if budget >= interval:
        what = "timeout" if not retries else "timeout x (retries + 1) plus backoff"
        issues.append(
            doc.issue(
                (*path, "timeout"),
                f"{what} ({budget:g}s) must be below interval ({interval:g}s)",
            )
        )


def _check_templates(
    doc: ConfigDocument,
    path: KeyPath,
    raw: dict[str, Any],
    known: set[str],
    issues: list[ConfigIssue],
) -> None:
    """Every `${name}` must be an env var, a secret, or extracted by an earlier step."""
    requests = _raw_requests(raw)
    fields = _TEMPLATE_FIELDS.get(check_kind(raw) or "", ())
    available = set(known)
    if raw.get("accounts") is not None:
        available.add("account")  # each run's account from the pool
    # A session's variables may come from a cached login of the same session.
    available |= {n for _, r in requests if r.get("session") for n in _extract_names(r)}
    for where, request in requests:
        for key, template in _raw_templates(request, fields):
            missing = [p for p in _unresolved(template) if p not in available]
            if missing:
                issues.append(
                    doc.issue(
                        (*path, *where, *key),
                        f"unknown variable {missing[0]!r}: not set in the "
                        "environment, not a secret, not extracted by an "
                        "earlier step",
                    )
                )
        available |= _extract_names(request)


def _raw_requests(raw: dict[str, Any]) -> list[tuple[KeyPath, dict[str, Any]]]:
    """What holds a check's templates, as written: a flow's steps, else the check itself."""
    kind = check_kind(raw)
    if kind in ("http", "websocket", "grpc"):
        return [((), raw)]
    steps = raw.get("steps")
    if kind != "flow" or not isinstance(steps, list):
        return []
    return [(("steps", i), step) for i, step in enumerate(steps) if isinstance(step, dict)]


def _extract_names(request: dict[str, Any]) -> set[str]:
    extract = request.get("extract")
    return {str(n) for n in extract} if isinstance(extract, dict) else set()


def _raw_templates(
    request: dict[str, Any], fields: tuple[str, ...]
) -> Iterator[tuple[KeyPath, Template]]:
    """The templates of these fields as written; malformed ones have field errors already."""
    for field in fields:
        value = request.get(field)
        if field == "json":
            for key, template in compile_json_template(value).templates():
                yield ("json", *key), template
        elif isinstance(value, dict):  # headers, metadata
            for name, entry in value.items():
                if isinstance(entry, str):
                    yield (field, name), compile_template(entry)
        elif isinstance(value, str):
            yield (field,), compile_template(value)


def _unresolved(template: Template) -> list[str]:
    return [p.name for p in template.parts if not isinstance(p, str) and p.default is None]


def request_templates(request: RequestSpec) -> Iterator[tuple[KeyPath, Template]]:
    """Every template of a request with its key path: url, proxy, headers, body, json strings."""
    yield ("url",), request.url
    if request.proxy_url is not None:
        yield ("proxy_url",), request.proxy_url
    for name, template in request.headers.items():
        yield ("headers", name), template
    if request.body is not None:
        yield ("body",), request.body
    if request.json_body is not None:
        for key, template in request.json_body.templates():
            yield ("json", *key), template


def sent_templates(check: Check) -> Iterator[Template]:
    """The templates a check sends apart from its URL: http and flow headers and bodies, a
    websocket check's headers, a grpc check's metadata (where tokens and passwords go)."""
    if isinstance(check, WebsocketCheck):
        yield from check.headers.values()
    elif isinstance(check, GrpcCheck):
        yield from check.metadata.values()
    else:
        requests: list[RequestSpec] = []
        if isinstance(check, FlowCheck):
            requests = list(check.steps)
        elif isinstance(check, HttpCheck):
            requests = [check]
        for request in requests:
            yield from (t for key, t in request_templates(request) if key[0] != "url")


def sensitive_values(
    checks: list[Check], secrets: Mapping[str, Secret], env: Mapping[str, str]
) -> frozenset[str]:
    """Secret values, plus env values that headers, bodies and metadata use (tokens,
    passwords).

    Environment values in a tcp or websocket check's `send` are added by the loader (`sent`).
    """
    values = {s.reveal() for s in secrets.values()}
    for check in checks:
        for template in sent_templates(check):
            values.update(env[n] for n in template.names if n in env and n not in secrets)
    return frozenset(v for v in values if v)

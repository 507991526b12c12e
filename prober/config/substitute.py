"""`${VAR}` and `${VAR:-default}` in a config document, filled from the environment at load.

Request fields (`url`, `headers`, `body`, `json`, `proxy_url`, a grpc check's `metadata`) are
left as templates: they may name variables an earlier step extracts, and secrets, which
resolve when the request is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prober.config.located import ConfigIssue, KeyPath
from prober.config.read import ConfigDocument
from prober.config.templates import TemplateError, compile_template

REQUEST_TEMPLATE_KEYS = frozenset({"url", "headers", "body", "json", "proxy_url", "metadata"})


def substitute(doc: ConfigDocument, env: Mapping[str, str], issues: list[ConfigIssue]) -> None:
    """Fill the document's placeholders in place; record the values used (to mask them in
    messages, and those a tcp check sends to treat as secrets)."""

    def walk(value: Any, path: KeyPath) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value and not _is_request_template(path):
            try:
                template = compile_template(value)
                used = {env[n] for n in template.names if n in env}
                doc.substituted.update(used)
                if _is_sent_data(path):
                    doc.sent.update(used)
                return template.render(env)
            except TemplateError as exc:
                issues.append(doc.issue(path, f"environment {exc}"))
        return value

    doc.data = walk(doc.data, ())


def _is_request_template(path: KeyPath) -> bool:
    """Request fields of checks and steps keep `${...}` for run time (variables, secrets)."""
    if len(path) >= 3 and path[0] == "checks" and path[2] in REQUEST_TEMPLATE_KEYS:
        return True
    if _is_capture_template(path):
        return True
    return (
        len(path) >= 5
        and path[0] == "checks"
        and path[2] == "steps"
        and (path[4] in REQUEST_TEMPLATE_KEYS)
    )


def _is_capture_template(path: KeyPath) -> bool:
    """A tcp `query_response` entry's `send`: its `${1}` and `${name}` are the captures of
    the entry's `expect` (blackbox_exporter's expansion), filled in at run time."""
    return (
        len(path) >= 5
        and path[0] == "checks"
        and path[2:3] == ("query_response",)
        and (path[4] == "send")
    )


def _is_sent_data(path: KeyPath) -> bool:
    """Strings a tcp check sends: environment values in them are treated as secrets."""
    return len(path) >= 4 and path[0] == "checks" and path[2] == "send"

"""Warnings about canaries that share a host with the platform they should stand apart from."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from prober.config.model import Check, FlowCheck, HttpCheck
from prober.config.secrets import Redactor
from prober.config.templates import TemplateError, TemplateValues

if TYPE_CHECKING:
    from prober.config.load import Config


def shared_fate_warnings(config: Config) -> list[str]:
    """A warning for each canary that probes the same host and port as a platform check.

    Such a canary fails together with the platform's host, and the prober then blames itself
    for the outage it exists to report (its alerts are held back while it is impaired).
    """
    values = config.template_values()
    platform: dict[tuple[str, int], str] = {}
    for check in config.checks:
        if not check.canary:
            for endpoint in endpoints(check, values):
                platform.setdefault(endpoint, check.name)
    warnings = []
    for check in config.checks:
        if check.canary:
            for host, port in endpoints(check, values):
                other = platform.get((host, port))
                if other is not None:
                    warnings.append(
                        f"check {check.name!r}: this canary probes {host}:{port}, like "
                        f"platform check {other!r}; when that host stops the prober would "
                        "blame itself. Point it at an endpoint apart from the platform "
                        "(CANARY_URL, `prober reference`)."
                    )
    if not warnings:
        return warnings
    hide = Redactor.of(config.sensitive_values)  # a host may come from a secret: this is logged
    return [hide(warning) for warning in warnings]


def endpoints(check: Check, values: TemplateValues) -> set[tuple[str, int]]:
    """The (host, port) pairs a check connects to, as far as its config tells."""
    if isinstance(check, HttpCheck | FlowCheck):
        requests = check.steps if isinstance(check, FlowCheck) else [check]
        found = set()
        for request in requests:
            try:
                parts = urlsplit(request.url.render(values))
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except (TemplateError, ValueError):
                continue
            if parts.hostname:
                found.add((parts.hostname, port))
        return found
    target = getattr(check, "target", None)
    if isinstance(target, str):
        host, _, port_text = target.rpartition(":")
        return {(host.strip("[]"), int(port_text))}
    return set()

"""`prober probe`: run one check once and show what happened, step by step.

Like blackbox_exporter's `debug=true`: the request, status, phase timings, assertion
outcomes and reason; with `--metrics`, the metric lines this run would export too.
Secrets are hidden.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from prober.config.load import Config, ConfigError, load_config
from prober.config.model import Check, FlowCheck, HttpCheck, RequestSpec
from prober.engine.runner import RunEnvironment, run_check
from prober.probes import http, lean
from prober.probes.context import HttpClients
from prober.probes.sessions import SessionStore
from prober.result import (
    PHASE_NAMES,
    DnsFacts,
    GrpcFacts,
    HttpFacts,
    Phases,
    Result,
    StepResult,
    WsFacts,
)
from prober.sinks.metrics import MetricsSink, SeriesPlan


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms"


def _outcome_line(step: StepResult) -> str:
    """The request and what it got back, in the words of its kind of facts."""
    facts = step.facts
    if isinstance(facts, HttpFacts):
        status = facts.status_code if facts.status_code is not None else "-"
        return f"  {step.request_line} -> status {status}"
    if isinstance(facts, DnsFacts) and facts.answer_count is not None:
        return f"  {step.request_line} -> {facts.answer_count} answers"
    if isinstance(facts, GrpcFacts) and facts.status_code is not None:
        serving = facts.serving_status or "no answer"
        return f"  {step.request_line} -> {serving} (grpc status {facts.status_code})"
    if isinstance(facts, WsFacts) and facts.status_code is not None:
        return f"  {step.request_line} -> status {facts.status_code}, {facts.messages} messages"
    return f"  {step.request_line}"


def request_paths(check: Check) -> dict[str, str]:
    """Which request path each HTTP step of the check takes: `lean` or `aiohttp`."""
    specs: dict[str, RequestSpec]
    if isinstance(check, HttpCheck):
        specs = {http.STEP_NAME: check}
    elif isinstance(check, FlowCheck):
        specs = {step.name: step for step in check.steps}
    else:
        return {}
    return {name: "lean" if lean.covers(spec) else "aiohttp" for name, spec in specs.items()}


def _spoken(step: StepResult, path: str) -> str:
    """The request path, `h2` where the lean path spoke HTTP/2 (the server chose it)."""
    facts = step.facts
    if isinstance(facts, HttpFacts) and (facts.http_version or "").startswith("2"):
        return "h2"
    return path


def format_step(step: StepResult, path: str = "") -> list[str]:
    """A step as readable lines: request, outcome, path, phases, extracted values, assertions."""
    mark = "ok" if step.success else "FAILED"
    optional = "" if step.critical else " (allow_failure)"
    lines = [f"step {step.name}{optional}: {mark} in {_ms(step.duration)}"]
    if step.cached:
        lines.append(f"  {step.request_line}")
        return lines
    lines.append(_outcome_line(step))
    if path:
        lines.append(f"  path: {_spoken(step, path)}")
    timings = step.facts.phases if step.facts is not None else Phases()
    phases = ", ".join(
        f"{n} {_ms(v)}" for n, v in zip(PHASE_NAMES, timings.as_tuple(), strict=True)
    )
    lines.append(f"  phases: {phases}")
    if step.tls is not None and step.tls.version:
        lines.append(f"  tls: {step.tls.version}")
    for name, value in step.extracted:
        lines.append(f"  extracted {name} = {value}")
    for outcome in step.assertions:
        verdict = "pass" if outcome.passed else "FAIL"
        lines.append(f"  assert {outcome.text}: {verdict} (actual {outcome.actual})")
    if not step.success:
        lines.append(f"  reason: {step.reason}: {step.message}")
    return lines


def format_result(result: Result, paths: Mapping[str, str] | None = None) -> str:
    """The run as readable lines; `paths` names each HTTP step's request path."""
    lines = [f"check {result.check}"]
    for step in result.steps:
        lines.extend(format_step(step, (paths or {}).get(step.name, "")))
    outcome = "SUCCESS" if result.success else f"FAILURE reason={result.reason}"
    if result.failed_step:
        outcome += f" step={result.failed_step}"
    lines.append(f"result: {outcome} in {_ms(result.duration)}, attempts {result.attempts}")
    if result.message:
        lines.append(f"message: {result.message}")
    return "\n".join(lines)


def metric_lines(config: Config, result: Result) -> str:
    """The per-check series this one run would export."""
    check = config.check(result.check)
    sink = MetricsSink()
    sink.apply({check.name: SeriesPlan.of(check)}, config.settings.labels)
    sink.record(result)
    text = sink.render().decode()
    return "\n".join(
        line
        for line in text.splitlines()
        if line and not line.startswith("#") and f'check="{check.name}"' in line
    )


async def probe_once(config_path: str, check_name: str, show_metrics: bool = False) -> int:
    """Run one check once and print its trace (and, if asked, its series).

    Exit 0 on success, 1 on failure, 2 on bad input.
    """
    try:
        config = load_config(config_path)
        check = config.check(check_name)
    except ConfigError as exc:
        print(f"{config_path}: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except KeyError:
        names = ", ".join(c.name for c in config.checks)
        print(f"prober: no check named {check_name!r}; checks: {names}", file=sys.stderr)
        return 2
    clients = HttpClients(config.settings.user_agent)
    try:
        env = RunEnvironment(
            clients, config.template_values(), config.sensitive_values, SessionStore()
        )
        result = await run_check(check, env)
    finally:
        await clients.close()
    print(format_result(result, request_paths(check)))
    if show_metrics:
        print("\nmetrics:")
        print(metric_lines(config, result))
    return 0 if result.success else 1

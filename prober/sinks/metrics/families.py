"""Every per-check family, written once: a table of the check-wide ones, and one table per
kind of facts (http, tls here; tcp, dns in families_tcp_dns.py) saying what each family
reads off a step's facts.

The fast renderer and the reference collector (render.py) both read `FAMILIES`, so they
cannot disagree. A step's facts are dispatched on their type: `HttpFacts` feed the http
table, the `TlsFacts` nested in http and tcp facts the tls table, and so on. A new kind of
facts adds its table to `TABLES`.
"""

from __future__ import annotations

from prober.result import PHASE_NAMES, HttpFacts, Result, TlsFacts
from prober.sinks.metrics.families_streams import GRPC_FAMILIES, WS_FAMILIES
from prober.sinks.metrics.families_tcp_dns import DNS_FAMILIES, TCP_FAMILIES
from prober.sinks.metrics.family import (
    CheckFamily,
    FactsFamily,
    Family,
    FamilyTable,
    Scope,
    attempts,
    check_histogram,
    degraded,
    earliest,
    facts_family,
    failures,
    info,
    labelled,
    per_check,
    per_step,
    phased,
    runs,
    step_histograms,
    summed,
)
from prober.sinks.metrics.state import CheckSeries, Value, ran_steps

CHECK_FAMILIES = FamilyTable(
    leading=(
        CheckFamily(
            "probe_success",
            "gauge",
            "1 if the last run of the check succeeded",
            per_check(lambda s: s.success),
        ),
        CheckFamily(
            "probe_duration_seconds",
            "gauge",
            "How long the last run took",
            per_check(lambda s: s.duration),
        ),
    ),
    trailing=(
        CheckFamily(
            "prober_check_duration_seconds", "histogram", "Duration of check runs", check_histogram
        ),
        CheckFamily("prober_check_runs_total", "counter", "Check runs by result", runs),
        CheckFamily(
            "prober_check_failures_total",
            "counter",
            "Failed attempts by reason and step",
            failures,
        ),
        CheckFamily(
            "prober_check_attempts_total", "counter", "Attempts made, retries included", attempts
        ),
        CheckFamily(
            "prober_check_degraded", "gauge", "1 if the last run passed but was slow", degraded
        ),
        CheckFamily(
            "prober_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last success",
            per_check(lambda s: s.last_success),
        ),
        CheckFamily(
            "prober_step_success",
            "gauge",
            "1 if the step's last run succeeded",
            per_step(lambda st: st.success),
        ),
        CheckFamily(
            "prober_step_reused",
            "gauge",
            "1 if the session step's last run reused a cached login instead of logging in",
            per_step(lambda st: st.reused),
        ),
        CheckFamily(
            "prober_step_propagation_seconds",
            "gauge",
            "A polled step's last run: seconds until what an earlier step wrote could be read",
            per_step(lambda st: st.waited),
        ),
        CheckFamily(
            "prober_check_accounts_probed",
            "gauge",
            "Accounts a pooled flow's last run probed",
            per_check(lambda s: s.accounts_probed),
        ),
        CheckFamily(
            "prober_check_accounts_failed",
            "gauge",
            "Accounts a pooled flow's last run failed for",
            per_check(lambda s: s.accounts_failed),
        ),
        CheckFamily(
            "prober_step_accounts_failed",
            "gauge",
            "Accounts each step of a pooled flow's last run failed for",
            per_step(lambda st: st.accounts_failed),
        ),
        CheckFamily(
            "prober_step_duration_seconds", "histogram", "Duration of flow steps", step_histograms
        ),
    ),
)

HTTP_FAMILIES = FamilyTable(
    leading=(
        # Like blackbox_exporter: 0 when there was no response at all.
        facts_family(
            HttpFacts,
            "probe_http_status_code",
            "HTTP status of the last response",
            lambda f: float(f.status_code or 0),
            Scope.RUN,
        ),
        facts_family(
            HttpFacts,
            "probe_http_duration_seconds",
            "Seconds per phase of the last request",
            lambda f: f.phases.as_tuple(),
            Scope.RUN,
            summed,
            phased(PHASE_NAMES),
        ),
    ),
    trailing=(
        facts_family(
            HttpFacts,
            "probe_http_redirects",
            "Redirects followed by each step's request",
            lambda f: float(f.redirects),
            Scope.FULL,
        ),
        facts_family(
            HttpFacts,
            "probe_http_content_length",
            "Content-Length of the response, -1 if absent",
            lambda f: float(f.content_length or 0),
            Scope.FULL,
        ),
        facts_family(
            HttpFacts,
            "probe_http_uncompressed_body_length",
            "Body bytes read after decompression",
            lambda f: float(f.body_length or 0),
            Scope.FULL,
        ),
        facts_family(
            HttpFacts,
            "probe_http_version",
            "HTTP version of each step's response",
            lambda f: float(f.http_version) if f.http_version else 0.0,
            Scope.FULL,
        ),
        # blackbox_exporter's, with its help texts; `detail: full` only (the series budget).
        facts_family(
            HttpFacts,
            "probe_http_ssl",
            "Indicates if SSL was used for the final redirect",
            lambda f: float(f.tls is not None),
            Scope.FULL,
        ),
        facts_family(
            HttpFacts,
            "probe_failed_due_to_regex",
            "Indicates if probe failed due to regex",
            lambda f: float(f.failed_due_to_regex),
            Scope.FULL,
        ),
        facts_family(
            HttpFacts,
            "probe_http_last_modified_timestamp_seconds",
            "Returns the Last-Modified HTTP response header in unixtime",
            lambda f: f.last_modified,
            Scope.FULL,
        ),
        facts_family(
            HttpFacts,
            "probe_ip_protocol",
            "Specifies whether probe ip protocol is IP4 or IP6",
            lambda f: float(f.ip_protocol) if f.ip_protocol else None,
            Scope.FULL,
        ),
        facts_family(
            HttpFacts,
            "probe_ip_addr_hash",
            "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
            lambda f: f.ip_addr_hash,
            Scope.FULL,
        ),
    ),
)

TLS_FAMILIES = FamilyTable(
    leading=(
        facts_family(
            TlsFacts,
            "probe_ssl_earliest_cert_expiry",
            "Earliest certificate expiry, unix time",
            lambda f: f.expiry,
            Scope.CHECK,
            earliest,
        ),
    ),
    trailing=(
        facts_family(
            TlsFacts,
            "probe_tls_version_info",
            "TLS version each step negotiated",
            lambda f: f.version,
            Scope.FULL,
            shape=info("version"),
        ),
        facts_family(
            TlsFacts,
            "probe_ssl_last_chain_expiry_timestamp_seconds",
            "Returns last SSL chain expiry in timestamp",
            lambda f: f.chain_expiry,
            Scope.FULL,
        ),
        facts_family(
            TlsFacts,
            "probe_ssl_last_chain_info",
            "Contains SSL leaf certificate information",
            lambda f: f.leaf.labels() if f.leaf else None,
            Scope.FULL,
            shape=labelled,
        ),
    ),
)

TABLES = (
    CHECK_FAMILIES,
    HTTP_FAMILIES,
    TLS_FAMILIES,
    TCP_FAMILIES,
    DNS_FAMILIES,
    GRPC_FAMILIES,
    WS_FAMILIES,
)
# The exposition's families, in the order it shows them.
FAMILIES: tuple[Family, ...] = (
    *(family for table in TABLES for family in table.leading),
    *(family for table in TABLES for family in table.trailing),
)
_READ_OFF_FACTS = tuple(f for f in FAMILIES if isinstance(f, FactsFamily))
# Each type of facts -> the families that read it, in FAMILIES order.
FACTS_FAMILIES: dict[type, tuple[FactsFamily, ...]] = {
    source: tuple(f for f in _READ_OFF_FACTS if source in f.sources)
    for source in dict.fromkeys(s for f in _READ_OFF_FACTS for s in f.sources)
}
# The same for a check whose steps keep no series (not a flow, not `detail: full`): it keeps
# nothing of the families shown per step only, so they are not even read.
_CHECK_WIDE_FACTS: dict[type, tuple[FactsFamily, ...]] = {
    source: tuple(f for f in families if f.scope is not Scope.FULL)
    for source, families in FACTS_FAMILIES.items()
}


def record(series: CheckSeries, result: Result) -> set[FactsFamily]:
    """Update a check's series from one run: the run-wide state, then each family of facts
    from the steps that ran, dispatched on the type of their facts (and of the TLS facts
    nested in them). Returns the families of facts whose kept values this run wrote: the
    others' samples are those of the last rendering."""
    series.record(result)
    table = FACTS_FAMILIES if series.keeps_steps else _CHECK_WIDE_FACTS
    read: dict[FactsFamily, list[tuple[str, Value]]] = {}
    for step in ran_steps(result):
        for facts in (step.facts, step.tls):
            for family in table.get(type(facts), ()):
                value = family.read(facts)
                if value is not None:
                    read.setdefault(family, []).append((step.name, value))
    return {f for f, values in read.items() if f.note(series, values, result.failed_step)}

"""The families of tcp and dns checks: what each reads off `TcpFacts` and `DnsFacts`.

Named, helped and shaped as blackbox_exporter's series where it has them
(`probe_dns_duration_seconds{phase}`, `probe_dns_*_rrs`, `probe_dns_serial`,
`probe_dns_lookup_time_seconds`); `probe_tcp_duration_seconds` is prober's own.
"""

from __future__ import annotations

from prober.result import PHASE_NAMES, DnsFacts, TcpFacts
from prober.sinks.metrics.family import FamilyTable, Scope, facts_family, last, phased, summed

TCP_PHASE_NAMES = PHASE_NAMES[:4]  # resolve, connect, tls, processing: no transfer for tcp
# blackbox_exporter's names for a dns check's phases; `request` is prober's processing.
DNS_PHASE_NAMES = ("resolve", "connect", "request")


TCP_FAMILIES = FamilyTable(
    trailing=(
        facts_family(
            TcpFacts,
            "probe_tcp_duration_seconds",
            "Seconds per phase of a tcp check",
            lambda f: f.phases.as_tuple()[: len(TCP_PHASE_NAMES)],
            Scope.RUN,
            summed,
            phased(TCP_PHASE_NAMES),
        ),
    ),
)

DNS_FAMILIES = FamilyTable(
    trailing=(
        # As blackbox_exporter: resolving the target's name (tcp: the target; dns: the server).
        facts_family(
            DnsFacts,
            "probe_dns_lookup_time_seconds",
            "Returns the time taken for probe dns lookup in seconds",
            lambda f: f.lookup_time,
            Scope.CHECK,
            last,
            also=(TcpFacts,),
        ),
        # A dns run without a response reports 0 records, as blackbox_exporter does.
        facts_family(
            DnsFacts,
            "probe_dns_answer_rrs",
            "Returns number of entries in the answer resource record list",
            lambda f: float(f.answer_count or 0),
            Scope.CHECK,
            last,
        ),
        facts_family(
            DnsFacts,
            "probe_dns_duration_seconds",
            "Duration of DNS request by phase",
            # blackbox_exporter's connect holds a DoT handshake (miekg/dns dials TLS).
            lambda f: (f.phases.resolve, f.phases.connect + f.phases.tls, f.phases.processing),
            Scope.RUN,
            summed,
            phased(DNS_PHASE_NAMES),
        ),
        facts_family(
            DnsFacts,
            "probe_dns_authority_rrs",
            "Returns number of entries in the authority resource record list",
            lambda f: float(f.authority_count or 0),
            Scope.FULL,
        ),
        facts_family(
            DnsFacts,
            "probe_dns_additional_rrs",
            "Returns number of entries in the additional resource record list",
            lambda f: float(f.additional_count or 0),
            Scope.FULL,
        ),
        # SOA queries only: the serial of the answer's SOA (0 without one).
        facts_family(
            DnsFacts,
            "probe_dns_serial",
            "Returns the serial number of the zone",
            lambda f: None if f.serial is None else float(f.serial),
            Scope.CHECK,
            last,
        ),
    ),
)

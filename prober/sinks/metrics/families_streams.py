"""The families of grpc and websocket checks: what each reads off `GrpcFacts` and `WsFacts`.

Named, helped and shaped as blackbox_exporter's series (`probe_grpc_*`; `probe_websocket_*`
from its unreleased websocket prober). prober's phases are finer than blackbox's: its gRPC
`check` is prober's connect + tls + check, its websocket `processing` is tls + handshake and
`transfer` is first_message. Families that would take a basic check over its series budget
(docs/METRICS.md) are `detail: full` only. The TLS series come from the facts' `tls`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prober.result import GrpcFacts, WsFacts
from prober.sinks.metrics.family import FamilyTable, Scope, facts_family, phased, summed
from prober.sinks.metrics.state import Pairs, Sample

GRPC_PHASE_NAMES = ("resolve", "connect", "tls", "check")
WS_PHASE_NAMES = ("resolve", "connect", "tls", "handshake", "first_message")
SERVING_STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")


def _serving_statuses(name: str, extra: Pairs, value: str) -> Iterator[Sample]:
    """One sample per serving status, 1 for the one answered (all 0 without an answer)."""
    for status in SERVING_STATUSES:
        yield name, (*extra, ("serving_status", status)), 1.0 if status == value else 0.0


GRPC_FAMILIES = FamilyTable(
    trailing=(
        # Like blackbox_exporter: the call's gRPC status; 4 (DEADLINE_EXCEEDED) on a timeout.
        facts_family(
            GrpcFacts,
            "probe_grpc_status_code",
            "Response gRPC status code",
            lambda f: None if f.status_code is None else float(f.status_code),
            Scope.RUN,
        ),
        facts_family(
            GrpcFacts,
            "probe_grpc_duration_seconds",
            "Duration of gRPC request by phase",
            lambda f: (f.phases.resolve, f.phases.connect, f.phases.tls, f.phases.processing),
            Scope.RUN,
            summed,
            phased(GRPC_PHASE_NAMES),
        ),
        facts_family(
            GrpcFacts,
            "probe_grpc_ssl",
            "Indicates if SSL was used for the connection",
            lambda f: 1.0 if f.tls is not None else 0.0,
            Scope.CHECK,
        ),
        facts_family(
            GrpcFacts,
            "probe_grpc_healthcheck_response",
            "Response HealthCheck response",
            lambda f: f.serving_status or "",
            Scope.FULL,
            shape=_serving_statuses,
        ),
    ),
)

WS_FAMILIES = FamilyTable(
    trailing=(
        # The upgrade's HTTP status: 101, the refusal's status, 0 without an answer.
        facts_family(
            WsFacts,
            "probe_websocket_status_code",
            "Status code of the WebSocket handshake",
            lambda f: float(f.status_code or 0),
            Scope.RUN,
        ),
        facts_family(
            WsFacts,
            "probe_websocket_duration_seconds",
            "Duration of the WebSocket exchange by phase",
            lambda f: f.phases.as_tuple(),
            Scope.RUN,
            summed,
            phased(WS_PHASE_NAMES),
        ),
        facts_family(
            WsFacts,
            "probe_websocket_connection_upgraded",
            "1 if the connection was upgraded to a WebSocket",
            lambda f: 1.0 if f.status_code == 101 else 0.0,
            Scope.FULL,
        ),
    ),
)

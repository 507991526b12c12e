"""The models of the checks, one per kind, and the tagged union `Check` (pydantic v2, frozen).

A check's `interval` and `timeout` are never unset: what the file leaves out is filled in as
the check is validated, from the global settings the loader passes in the validation context
(`timing_context`), else from the global defaults. So no code ever meets a check without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import reduce
from operator import or_
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, get_args

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from prober.config.model_fields import (
    Duration,
    Labels,
    Model,
    Name,
    PositiveDuration,
    Regexes,
    TemplateStr,
    parse_duration,
)
from prober.config.model_net import (
    DNS_RCODES,
    OneRegex,
    QueryClass,
    QueryResponse,
    QueryType,
    RecordValidation,
    SourceAddress,
    rounds_as_entries,
)
from prober.config.model_requests import IpProtocol, RequestSpec, Step, TlsOptions
from prober.config.model_streams import GrpcMetadata, GrpcTarget, WsUrl

_DNS_SERVER = re.compile(
    r"\[[0-9A-Fa-f:.]+\](:\d{1,5})?"  # [IPv6] or [IPv6]:PORT
    r"|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*"  # a bare IPv6 address
    r"|[^\s:\[\]]+(:\d{1,5})?"  # HOST or HOST:PORT
)
# How many series a check exports: `basic` keeps the series budget (docs/METRICS.md); `full`
# adds per-step histograms, phases and HTTP facts.
Detail = Literal["basic", "full"]

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 10.0
# A check that sets no timeout gets the global one, capped to leave room before its next run.
_DEFAULT_TIMEOUT_SHARE = 0.8
_TIMING = "timing"


@dataclass(frozen=True, slots=True)
class TimingDefaults:
    """The global interval and timeout: what a check that sets neither runs with."""

    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT

    def timeout_for(self, interval: float) -> float:
        """The global timeout, or 80% of the interval where that is shorter."""
        return min(self.timeout, interval * _DEFAULT_TIMEOUT_SHARE)


def timing_context(defaults: TimingDefaults) -> dict[str, Any]:
    """The validation context that gives checks these defaults."""
    return {_TIMING: defaults}


def written_duration(value: Any) -> float | None:
    """A duration as written, or None when it is absent or invalid (reported elsewhere)."""
    try:
        seconds = parse_duration(value)
    except ValueError:
        return None
    return float(seconds) if isinstance(seconds, float) and seconds >= 0 else None


class CheckBase(Model):
    """Settings every kind of check has."""

    name: Name
    # Optional in the file: a check without one is a component of its own, named after it.
    component: Name
    # Optional in the file: filled in from the global settings (see the module docstring).
    interval: PositiveDuration
    timeout: PositiveDuration
    labels: Labels = Field(default_factory=dict)
    canary: bool = False
    retries: int = Field(default=0, ge=0, le=10)
    retry_backoff: Duration = 0.2
    degraded_latency: PositiveDuration | None = None
    detail: Detail = "basic"

    @model_validator(mode="before")
    @classmethod
    def _default_component(cls, value: Any) -> Any:
        """A canary's component is `canary`; any other check defaults to its own name."""
        if not isinstance(value, dict):
            return value
        if value.get("canary") is True:
            component = value.get("component", "canary")
            if component != "canary":
                raise ValueError("a canary check has component 'canary' (leave component out)")
            return {**value, "component": "canary"}
        if "component" not in value and isinstance(value.get("name"), str):
            return {**value, "component": value["name"]}
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_timing(cls, value: Any, info: ValidationInfo) -> Any:
        """The global interval, and the global timeout capped by the interval, where unset."""
        if not isinstance(value, dict):
            return value
        context = info.context if isinstance(info.context, dict) else {}
        defaults = context.get(_TIMING, TimingDefaults())
        filled = dict(value)
        if filled.get("interval") is None:
            filled["interval"] = defaults.interval
        if filled.get("timeout") is None:
            # An invalid interval has its own error; its timeout must not get one too.
            interval = written_duration(filled["interval"]) or defaults.interval
            filled["timeout"] = defaults.timeout_for(interval)
        return filled


class HttpCheck(CheckBase, RequestSpec):
    """One HTTP request: a one-step flow."""

    kind: Literal["http"] = "http"


_ACCOUNT_PATTERN = re.compile(r"^[^{}]*\{i(:0?\d+d)?\}[^{}]*$")
MAX_ACCOUNTS = 100_000


class AccountPool(Model):
    """The accounts a flow runs as: `${account}` in its steps, `fanout` of them per run.

    Exactly one of `names` (a list), `file` (one name per line, read at load) or `pattern`
    with `count` (`user-{i:04d}` for user-0001 ... user-NNNN).
    """

    names: list[Name] | None = None
    file: str | None = None
    pattern: str | None = None
    count: int | None = Field(default=None, ge=1, le=MAX_ACCOUNTS)

    @model_validator(mode="after")
    def _one_source(self) -> AccountPool:
        given = [k for k in ("names", "file", "pattern") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of names, file, or pattern with count")
        if self.pattern is not None:
            if not _ACCOUNT_PATTERN.match(self.pattern):
                raise ValueError("pattern needs one {i} placeholder, e.g. user-{i:04d}")
            if self.count is None:
                raise ValueError("a pattern needs a count")
        elif self.count is not None:
            raise ValueError("count goes with pattern")
        if self.names is not None and not self.names:
            raise ValueError("names must not be empty")
        return self

    def expand(self) -> tuple[str, ...]:
        """The account names of a `names` or `pattern` pool (a `file` is read by the loader)."""
        if self.pattern is not None and self.count is not None:
            return tuple(self.pattern.format(i=i) for i in range(1, self.count + 1))
        return tuple(self.names or ())


class FlowCheck(CheckBase):
    """Ordered steps; variables extracted by one step feed the templates of later ones."""

    kind: Literal["flow"] = "flow"
    steps: list[Step] = Field(min_length=1)
    accounts: AccountPool | None = None
    # Accounts each run uses, concurrently, rotating through the pool. Resolved at load:
    # `account_names` holds the pool's names.
    fanout: int = Field(default=1, ge=1, le=50)
    account_names: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _names_are_resolved(cls, value: Any) -> Any:
        if isinstance(value, dict) and "account_names" in value:
            raise ValueError("account_names is filled in from accounts; use accounts")
        return value

    @model_validator(mode="after")
    def _pool(self) -> FlowCheck:
        if self.accounts is None and self.fanout != 1:
            raise ValueError("fanout needs accounts")
        known = len(self.accounts.expand()) if self.accounts is not None else 0
        if known and self.fanout > known:
            raise ValueError(f"fanout {self.fanout} is more than the {known} accounts")
        return self

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, steps: list[Step]) -> list[Step]:
        seen: set[str] = set()
        for step in steps:
            if step.name in seen:
                raise ValueError(f"step name {step.name!r} is used twice")
            seen.add(step.name)
        return steps


class TcpCheck(CheckBase):
    """Open a TCP connection, optionally upgrade to TLS, and hold a line dialogue: prober's
    `send`/`expect` rounds, or blackbox_exporter's `query_response` entries."""

    kind: Literal["tcp"]
    target: str
    send: list[str] = Field(default_factory=list)
    expect: Regexes = Field(default_factory=list)
    query_response: list[QueryResponse] = Field(default_factory=list)
    use_tls: bool = False
    tls: TlsOptions = Field(default_factory=TlsOptions)
    ip_protocol: IpProtocol = "either"
    source_ip_address: SourceAddress | None = None

    @field_validator("target")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):\d{1,5}", value):
            raise ValueError(f"{value!r}: expected HOST:PORT (IPv6 as [::1]:PORT)")
        return value

    @model_validator(mode="after")
    def _one_dialogue(self) -> TcpCheck:
        if self.query_response and (self.send or self.expect):
            raise ValueError("give query_response or send/expect, not both")
        return self

    @property
    def dialogue(self) -> tuple[QueryResponse, ...]:
        """The dialogue as query_response entries, whichever form the check was written in."""
        if self.query_response:
            return tuple(self.query_response)
        return rounds_as_entries(self.send, self.expect)


class DnsCheck(CheckBase):
    """Resolve a name, optionally against a given server, and judge the answers; over UDP,
    TCP or TLS (`dns_over_tls`, RFC 7858: TCP and TLS, port 853 unless `server` names one)."""

    kind: Literal["dns"]
    query_name: str
    query_type: QueryType = "A"
    query_class: QueryClass = "IN"
    recursion_desired: bool = True
    transport_protocol: Literal["udp", "tcp"] = "udp"
    dns_over_tls: bool = False
    tls: TlsOptions = Field(default_factory=TlsOptions)
    server: str | None = None
    valid_rcodes: list[str] = Field(default_factory=lambda: ["NOERROR"])
    answer_regex: Regexes = Field(default_factory=list)
    min_answers: int = Field(default=0, ge=0)
    validate_answer_rrs: RecordValidation = Field(default_factory=RecordValidation)
    validate_authority_rrs: RecordValidation = Field(default_factory=RecordValidation)
    validate_additional_rrs: RecordValidation = Field(default_factory=RecordValidation)
    ip_protocol: IpProtocol = "either"
    source_ip_address: SourceAddress | None = None

    @model_validator(mode="before")
    @classmethod
    def _tls_over_tcp(cls, data: Any) -> Any:
        """DoT runs over TCP: `transport_protocol` defaults to tcp with it; udp is refused
        (blackbox_exporter refuses it too)."""
        if not isinstance(data, dict) or data.get("dns_over_tls") is not True:
            return data
        if data.get("transport_protocol", "tcp") != "tcp":
            raise ValueError("dns_over_tls runs over TCP: set transport_protocol: tcp or drop it")
        return {**data, "transport_protocol": "tcp"}

    @field_validator("server")
    @classmethod
    def _server(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_SERVER.fullmatch(value):
            raise ValueError(f"{value!r}: expected HOST, HOST:PORT, an IPv6 address or [IPv6]:PORT")
        return value

    @field_validator("valid_rcodes")
    @classmethod
    def _rcodes(cls, values: list[str]) -> list[str]:
        upper = [v.upper() for v in values]
        unknown = [v for v in upper if v not in DNS_RCODES]
        if unknown:
            raise ValueError(f"unknown rcode {unknown[0]!r}; known: {', '.join(DNS_RCODES)}")
        return upper


class GrpcCheck(CheckBase):
    """Ask a gRPC server's health service (`grpc.health.v1.Health/Check`) whether `service`
    ("" for the whole server) is SERVING, over a fresh HTTP/2 connection."""

    kind: Literal["grpc"]
    target: GrpcTarget
    service: str = ""
    use_tls: bool = False
    tls: TlsOptions = Field(default_factory=TlsOptions)
    ip_protocol: IpProtocol = "either"
    metadata: GrpcMetadata = Field(default_factory=dict)


class WebsocketCheck(CheckBase):
    """Open a WebSocket, optionally send one text message, then wait `within` (else until
    the timeout) for a message matching `expect`: "a notification arrives in time"."""

    kind: Literal["websocket"]
    url: WsUrl
    headers: dict[str, TemplateStr] = Field(default_factory=dict)
    send: TemplateStr | None = None
    expect: OneRegex | None = None
    within: PositiveDuration | None = None
    tls: TlsOptions = Field(default_factory=TlsOptions)
    ip_protocol: IpProtocol = "either"

    @model_validator(mode="after")
    def _within_needs_expect(self) -> WebsocketCheck:
        if self.within is not None and self.expect is None:
            raise ValueError("within is the time to wait for expect: give expect too")
        return self


# The kinds of check, written once. The tagged union below, its error message, the loader's
# kind tags and the probes' registry (prober/probes/registry.py) are all derived from it.
AnyCheck = HttpCheck | FlowCheck | TcpCheck | DnsCheck | GrpcCheck | WebsocketCheck
CHECK_MODELS: tuple[type[CheckBase], ...] = get_args(AnyCheck)


def _kind_of(model: type[CheckBase]) -> str:
    """The kind a check model stands for: the one value its `kind` Literal allows."""
    (kind,) = get_args(model.model_fields["kind"].annotation)
    return str(kind)


CHECK_KINDS = tuple(_kind_of(model) for model in CHECK_MODELS)


def check_kind(value: Any) -> str | None:
    """The kind of a check: its `kind` key, else `http` for a `url` and `flow` for `steps`."""
    if not isinstance(value, dict):
        return getattr(value, "kind", None)
    kind = value.get("kind")
    if kind is None:
        if "url" in value:
            return "http"
        if "steps" in value:
            return "flow"
    return kind if isinstance(kind, str) else None


if TYPE_CHECKING:
    Check: TypeAlias = AnyCheck
else:
    Check = Annotated[
        reduce(or_, (Annotated[m, Tag(k)] for m, k in zip(CHECK_MODELS, CHECK_KINDS, strict=True))),
        Discriminator(
            check_kind,
            custom_error_type="check_kind",
            custom_error_message=(
                f"unknown or missing kind: give kind ({', '.join(CHECK_KINDS[:-1])} or "
                f"{CHECK_KINDS[-1]}), or a url for an http check"
            ),
        ),
    ]

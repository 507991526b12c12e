"""The typed, immutable config model (pydantic v2). Loading and error locating live in config.py."""

from __future__ import annotations

import re
from functools import reduce
from operator import or_
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from prober.config.assertions import Assertion, parse_assertion
from prober.config.templates import (
    JsonPath,
    Regex,
    RegexError,
    Template,
    compile_regex,
    compile_template,
    compile_url_template,
    parse_json_path,
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
DEFAULT_MAX_BODY_BYTES = 1 << 20
# Headers that are never sent on to another origin, whatever `redirect_headers` says.
NEVER_REDIRECTED = frozenset({"authorization", "proxy-authorization", "cookie", "host"})
DNS_RCODES = (
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
)
_DNS_SERVER = re.compile(
    r"\[[0-9A-Fa-f:.]+\](:\d{1,5})?"  # [IPv6] or [IPv6]:PORT
    r"|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*"  # a bare IPv6 address
    r"|[^\s:\[\]]+(:\d{1,5})?"  # HOST or HOST:PORT
)


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


def _compile_regex(value: str) -> Regex:
    try:
        return compile_regex(value)
    except RegexError as exc:
        raise ValueError(str(exc)) from None


def _compile_regexes(values: Any) -> Any:
    if not isinstance(values, list):
        return values
    return [_compile_regex(v) if isinstance(v, str) else v for v in values]


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


def _to_assertion(value: Any) -> Any:
    if isinstance(value, Assertion):
        return value
    if not isinstance(value, str):
        raise ValueError("expected an assertion string such as 'status == 200'")
    return parse_assertion(value)


TemplateStr = Annotated[Template, BeforeValidator(_to_template)]
UrlTemplateStr = Annotated[Template, BeforeValidator(_to_url_template)]
AssertionStr = Annotated[Assertion, BeforeValidator(_to_assertion)]


class Model(BaseModel):
    """Base of every config model: unknown keys are errors and values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Extraction(Model):
    """Where to take one variable from: exactly one of json, regex, header, cookie."""

    json_path: JsonPath | None = Field(default=None, alias="json")
    regex: Regex | None = None
    header: str | None = None
    cookie: str | None = None
    secret: bool = True

    @field_validator("json_path", mode="before")
    @classmethod
    def _parse_path(cls, value: Any) -> Any:
        return parse_json_path(value) if isinstance(value, str) else value

    @field_validator("regex", mode="before")
    @classmethod
    def _parse_regex(cls, value: Any) -> Any:
        if isinstance(value, str):
            pattern = _compile_regex(value)
            if pattern.groups < 1:
                raise ValueError("the regex needs one capture group: the value to extract")
            return pattern
        return value

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"json": value}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Extraction:
        given = [x for x in (self.json_path, self.regex, self.header, self.cookie) if x]
        if len(given) != 1:
            raise ValueError("give exactly one of json, regex, header, cookie")
        return self


class TlsOptions(Model):
    """Client TLS settings for https targets."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    server_name: str | None = None


IpProtocol = Literal["ip4", "ip6", "either"]
# How many series a check exports: `basic` keeps the series budget (docs/METRICS.md); `full`
# adds per-step histograms, phases and HTTP facts.
Detail = Literal["basic", "full"]


class RequestSpec(Model):
    """One HTTP request and how to judge its response; shared by http checks and flow steps."""

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    url: UrlTemplateStr
    headers: dict[str, TemplateStr] = Field(default_factory=dict)
    body: TemplateStr | None = None
    json_body: Any = Field(default=None, alias="json")
    expected_status: list[int | str] = Field(default_factory=lambda: list[int | str](["2xx"]))
    assertions: list[AssertionStr] = Field(default_factory=list, alias="assert")
    extract: dict[str, Extraction] = Field(default_factory=dict)
    follow_redirects: bool = True
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    keep_alive: bool = False
    tls: TlsOptions = Field(default_factory=TlsOptions)
    hostname: str | None = None
    ip_protocol: IpProtocol = "either"
    proxy_url: UrlTemplateStr | None = None
    redirect_headers: list[str] = Field(default_factory=list)

    @field_validator("expected_status")
    @classmethod
    def _check_status(cls, values: list[int | str]) -> list[int | str]:
        for value in values:
            ok = (isinstance(value, int) and 100 <= value <= 599) or (
                isinstance(value, str) and re.fullmatch(r"[1-5]xx", value)
            )
            if not ok:
                raise ValueError(f"{value!r} is not a status code (100-599) or class like 2xx")
        return values

    @field_validator("redirect_headers")
    @classmethod
    def _check_redirect_headers(cls, names: list[str]) -> list[str]:
        """Names of headers that may follow a redirect to another origin; never credentials."""
        for name in names:
            if name.lower() in NEVER_REDIRECTED:
                raise ValueError(f"{name} never follows a redirect to another origin")
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"{name!r} is not a header name")
        return [name.lower() for name in names]

    @field_validator("extract")
    @classmethod
    def _check_variable_names(cls, values: dict[str, Extraction]) -> dict[str, Extraction]:
        for name in values:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"variable name {name!r} must be letters, digits and _")
        return values

    @model_validator(mode="after")
    def _one_body(self) -> RequestSpec:
        if self.body is not None and self.json_body is not None:
            raise ValueError("give either body or json, not both")
        return self


class Poll(Model):
    """Send a step again until it passes: for a write to become visible (propagation)."""

    every: PositiveDuration = 0.5
    within: PositiveDuration = 10.0
    # A step that passes only after this long marks the run degraded (slow propagation).
    degraded_after: PositiveDuration | None = None


class Step(RequestSpec):
    """One request of a flow."""

    name: Name
    # The component this step exercises, when not its check's (a flow's login step: login).
    component: Name | None = None
    allow_failure: bool = False
    always_run: bool = False
    session: Name | None = None
    session_ttl: PositiveDuration = 300.0
    poll: Poll | None = None


class CheckBase(Model):
    """Settings every kind of check has."""

    name: Name
    # Optional in the file: a check without one is a component of its own, named after it.
    component: Name
    interval: PositiveDuration | None = None
    timeout: PositiveDuration | None = None
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
    """Open a TCP connection, optionally upgrade to TLS, send lines and expect replies."""

    kind: Literal["tcp"]
    target: str
    send: list[str] = Field(default_factory=list)
    expect: Regexes = Field(default_factory=list)
    use_tls: bool = False
    tls: TlsOptions = Field(default_factory=TlsOptions)
    ip_protocol: IpProtocol = "either"

    @field_validator("target")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):\d{1,5}", value):
            raise ValueError(f"{value!r}: expected HOST:PORT (IPv6 as [::1]:PORT)")
        return value


class DnsCheck(CheckBase):
    """Resolve a name, optionally against a given server, and judge the answers."""

    kind: Literal["dns"]
    query_name: str
    query_type: Literal["A", "AAAA", "CNAME", "TXT", "MX", "NS", "SOA"] = "A"
    server: str | None = None
    valid_rcodes: list[str] = Field(default_factory=lambda: ["NOERROR"])
    answer_regex: Regexes = Field(default_factory=list)
    min_answers: int = Field(default=0, ge=0)
    ip_protocol: IpProtocol = "either"

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


# The kinds of check, written once. The tagged union below, its error message, the loader's
# kind tags and the probes' registry (prober/probes/registry.py) are all derived from it.
AnyCheck = HttpCheck | FlowCheck | TcpCheck | DnsCheck
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


class SecretSource(Model):
    """Where a secret's value comes from: an environment variable or a file."""

    env: str | None = None
    file: str | None = None
    default: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env or file")
        return self


class CheckFile(Model):
    """A file under checks/: a list of checks."""

    checks: list[Check] = Field(default_factory=list)


class GlobalConfig(Model):
    """prober.yml: defaults, global labels, secrets and which check files to load."""

    interval: PositiveDuration = 30.0
    timeout: PositiveDuration = 10.0
    labels: Labels = Field(default_factory=dict)
    check_files: list[str] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    secrets: dict[str, SecretSource] = Field(default_factory=dict)
    max_concurrent_probes: int = Field(default=2000, gt=0)
    loop_lag_budget: PositiveDuration = 0.1
    user_agent: str = "prober/0.1"

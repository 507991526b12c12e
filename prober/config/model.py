"""The typed, immutable config model (pydantic v2): prober.yml's settings and a check file.

The models of checks live in model_checks.py, of requests in model_requests.py, and their
field types in model_fields.py; the names the rest of prober uses are importable from here.
Reading, validating and resolving a config is config/load.py's job.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from prober.config.model_checks import (
    CHECK_KINDS,
    CHECK_MODELS,
    DEFAULT_INTERVAL,
    DEFAULT_TIMEOUT,
    AccountPool,
    Check,
    CheckBase,
    DnsCheck,
    FlowCheck,
    GrpcCheck,
    HttpCheck,
    TcpCheck,
    TimingDefaults,
    WebsocketCheck,
    check_kind,
)
from prober.config.model_fields import Labels, Model, PositiveDuration, parse_duration, valid_name
from prober.config.model_requests import (
    NEVER_REDIRECTED,
    Compression,
    Extraction,
    HeaderMatch,
    IpProtocol,
    Poll,
    RequestSpec,
    Step,
    TlsOptions,
)

__all__ = [
    "CHECK_KINDS",
    "CHECK_MODELS",
    "NEVER_REDIRECTED",
    "AccountPool",
    "Check",
    "CheckBase",
    "CheckFile",
    "Compression",
    "DnsCheck",
    "Extraction",
    "FlowCheck",
    "GlobalConfig",
    "GrpcCheck",
    "HeaderMatch",
    "HttpCheck",
    "IpProtocol",
    "Model",
    "Poll",
    "RequestSpec",
    "SecretSource",
    "Step",
    "TcpCheck",
    "TlsOptions",
    "WebsocketCheck",
    "check_kind",
    "parse_duration",
    "valid_name",
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

    interval: PositiveDuration = DEFAULT_INTERVAL
    timeout: PositiveDuration = DEFAULT_TIMEOUT
    labels: Labels = Field(default_factory=dict)
    check_files: list[str] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    secrets: dict[str, SecretSource] = Field(default_factory=dict)
    max_concurrent_probes: int = Field(default=2000, gt=0)
    loop_lag_budget: PositiveDuration = 0.1
    user_agent: str = "prober/0.1"

    @property
    def timing(self) -> TimingDefaults:
        """What a check that sets no interval or timeout runs with."""
        return TimingDefaults(self.interval, self.timeout)

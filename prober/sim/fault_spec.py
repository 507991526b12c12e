"""What a user may say is wrong with a component (`FaultSpec`), and how that input is checked.

Faults come from `--fault` flags, the admin API's JSON and scenario files; a bad one is a
located error in the same shape as a config error (`prober.config.located`): `WHERE: key: what`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prober.config.located import LocatedData, validation_issues

_MAX_LATENCY_MS = 600_000.0
_MAX_BODY_BYTES = 10 * 1024**3


class Component(StrEnum):
    """A part of the platform that faults target; `all` targets every part at once."""

    API = "api"
    LOGIN = "login"
    TIMELINE = "timeline"
    NOTIFICATIONS = "notifications"
    ALL = "all"


PLATFORM_COMPONENTS: tuple[Component, ...] = tuple(c for c in Component if c is not Component.ALL)
# Where a write becomes visible, so where its propagation can lag.
PROPAGATING_COMPONENTS = (Component.TIMELINE, Component.NOTIFICATIONS, Component.ALL)


class FaultError(ValueError):
    """A fault given by a user (CLI, admin API) is not valid; the message is one line."""


class FaultSpec(BaseModel):
    """What is wrong with one component; every field is optional and the empty spec is healthy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: int | None = Field(default=None, ge=400, le=599)
    error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    latency_ms: float | None = Field(default=None, ge=0.0, le=_MAX_LATENCY_MS)
    latency_jitter_ms: float | None = Field(default=None, ge=0.0, le=_MAX_LATENCY_MS)
    hang: bool = False
    reset: bool = False
    slow_body_bytes_per_s: int | None = Field(default=None, gt=0)
    body_bytes: int | None = Field(default=None, ge=16, le=_MAX_BODY_BYTES)
    malformed: Literal["json", "truncated"] | None = None
    wrong_content: bool = False
    accounts: float | None = Field(default=None, gt=0.0, le=1.0)
    propagation_delay_ms: float | None = Field(default=None, ge=0.0, le=_MAX_LATENCY_MS)

    @field_validator("malformed", mode="before")
    @classmethod
    def _malformed_flag(cls, value: object) -> object:
        """Accept `true`/`false` as a shorthand: `true` means invalid JSON."""
        if value is True:
            return "json"
        if value is False:
            return None
        return value

    def is_empty(self) -> bool:
        """True when the spec changes nothing, so storing it equals clearing the component."""
        return self == _HEALTHY

    def failure_rate(self) -> float:
        """Share of requests this layer fails: `status` alone fails all of them."""
        if self.error_rate is not None:
            return self.error_rate
        return 1.0 if self.status is not None else 0.0

    def hits(self, share: float | None) -> bool:
        """True when this fault applies to a request whose account has shard `share`.

        An account-scoped fault spares requests with no account (`share` None): health checks,
        status, a login whose body names nobody.
        """
        if self.accounts is None:
            return True
        return share is not None and share < self.accounts


_HEALTHY = FaultSpec()
FIELD_NAMES: tuple[str, ...] = tuple(FaultSpec.model_fields)
_UNKNOWN_FIELD = f"unknown key (allowed: {', '.join(FIELD_NAMES)})"


def describe_validation_error(exc: ValidationError) -> list[str]:
    """One readable line per pydantic error of the sim's own input, `key.path: message (got
    value)`: the shared located shape, without a file."""
    return [str(issue) for issue in validation_issues(exc, LocatedData("", None), show_input=True)]


def parse_fault_spec(
    data: object, target: str = "fault", component: Component | None = None
) -> FaultSpec:
    """Validate user input into a FaultSpec (for `component` if given), or raise a FaultError
    whose message is `TARGET: key: what` for each problem."""
    if not isinstance(data, Mapping):
        raise FaultError(f"{target}: expected a JSON object of fault fields")
    where = LocatedData(target, data)
    try:
        spec = FaultSpec.model_validate(data)
    except ValidationError as exc:
        issues = validation_issues(exc, where, show_input=True, unknown_key=_UNKNOWN_FIELD)
        raise FaultError("; ".join(str(issue) for issue in issues)) from None
    found = misplaced_fields(component, spec) if component is not None else iter(())
    misplaced = [where.issue((name,), why) for name, why in found]
    if misplaced:
        raise FaultError("; ".join(str(issue) for issue in misplaced))
    return spec


def misplaced_fields(component: Component, spec: FaultSpec) -> Iterator[tuple[str, str]]:
    """(field, why) for each field of `spec` that would do nothing on `component`."""
    if spec.propagation_delay_ms is not None and component not in PROPAGATING_COMPONENTS:
        where = ", ".join(c.value for c in PROPAGATING_COMPONENTS)
        yield (
            "propagation_delay_ms",
            f"only on {where} (where writes become visible), not on {component.value}",
        )


def refuse_misplaced_fields(component: Component, spec: FaultSpec) -> None:
    """Raise a FaultError for a field that would do nothing on `component`, not ignore it."""
    first = next(misplaced_fields(component, spec), None)
    if first is not None:
        raise FaultError(f"{first[0]}: {first[1]}")


def parse_component(name: str) -> Component:
    """The Component called `name`, or a FaultError listing the known ones."""
    try:
        return Component(name)
    except ValueError:
        known = ", ".join(c.value for c in Component)
        raise FaultError(f"unknown component {name!r} (known: {known})") from None


def parse_fault_arg(text: str) -> tuple[Component, dict[str, Any]]:
    """Split `component:key=value,key=value` (a bare `key` means true) into raw fields."""
    name, sep, body = text.partition(":")
    if not sep or not body:
        raise FaultError(f"bad --fault {text!r}: expected COMPONENT:KEY=VALUE[,KEY=VALUE...]")
    fields: dict[str, Any] = {}
    for item in body.split(","):
        key, has_value, raw = item.partition("=")
        if not key.strip():
            raise FaultError(f"bad --fault {text!r}: empty key in {item!r}")
        # YAML scalars give the natural types: 503 -> int, 0.2 -> float, true -> bool.
        fields[key.strip()] = yaml.safe_load(raw) if has_value else True
    return parse_component(name.strip()), fields


def parse_fault_args(texts: Iterable[str]) -> dict[str, FaultSpec]:
    """Validate repeated `--fault` values; later values for one component add to earlier ones."""
    raw: dict[Component, dict[str, Any]] = {}
    for text in texts:
        component, fields = parse_fault_arg(text)
        raw.setdefault(component, {}).update(fields)
    return {c.value: parse_fault_spec(fields, f"--fault {c.value}", c) for c, fields in raw.items()}

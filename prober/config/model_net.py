"""The parts of tcp and dns checks that are more than a plain field: blackbox_exporter's
`query_response` entries, record validators, query types and classes, source addresses.

Named and shaped as blackbox_exporter's keys (docs/CONFIG.md has the mapping), each checked
when the config loads, so a probe never meets a type name or a regex it cannot use.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

import dns.rdataclass
import dns.rdatatype
from pydantic import BeforeValidator, Field, model_validator

from prober.config.model_fields import Model, Regexes, checked_regex
from prober.config.templates import Regex

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
DNS_CLASSES = ("IN", "CS", "CH", "HS", "NONE", "ANY")


def _regex(value: Any) -> Any:
    return checked_regex(value) if isinstance(value, str) else value


def _query_type(value: Any) -> Any:
    """Any record type name dnspython knows (A, AAAA, SRV, PTR, SOA, CAA, ANY, ...)."""
    if not isinstance(value, str):
        return value
    name = value.upper()
    try:
        dns.rdatatype.from_text(name)
    except dns.rdatatype.UnknownRdatatype:
        raise ValueError(
            f"unknown query type {value!r} (A, AAAA, SRV, PTR, SOA, ANY, ...)"
        ) from None
    if name.startswith("TYPE"):
        raise ValueError(f"unknown query type {value!r}: give its name (A, SRV, ...)")
    return name


def _query_class(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    name = value.upper()
    if name not in DNS_CLASSES:
        raise ValueError(f"unknown query class {value!r}; known: {', '.join(DNS_CLASSES)}")
    dns.rdataclass.from_text(name)
    return name


def _ip_address(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
    return value


OneRegex = Annotated[Regex, BeforeValidator(_regex)]
QueryType = Annotated[str, BeforeValidator(_query_type)]
QueryClass = Annotated[str, BeforeValidator(_query_class)]
# The local address a probe's socket is bound to before it connects (blackbox's
# `source_ip_address`); the port is left to the system.
SourceAddress = Annotated[str, BeforeValidator(_ip_address)]


class RecordValidation(Model):
    """blackbox_exporter's `validate_*_rrs`: regexes matched, unanchored, on each record of a
    section as one TAB-separated line (`name<TAB>ttl<TAB>class<TAB>type<TAB>data`)."""

    fail_if_matches_regexp: Regexes = Field(default_factory=list)
    fail_if_not_matches_regexp: Regexes = Field(default_factory=list)
    fail_if_all_match_regexp: Regexes = Field(default_factory=list)
    fail_if_none_matches_regexp: Regexes = Field(default_factory=list)


class QueryResponse(Model):
    """One entry of a tcp dialogue, done in blackbox_exporter's order: read lines until one
    matches `expect`, write `send` (its `${1}`/`${name}` filled from that match) and a newline,
    then, with `starttls`, shake hands over TLS on the same connection."""

    expect: OneRegex | None = None
    send: str | None = None
    starttls: bool = False

    @model_validator(mode="after")
    def _does_something(self) -> QueryResponse:
        if self.expect is None and self.send is None and not self.starttls:
            raise ValueError("an entry needs expect, send or starttls")
        return self


def rounds_as_entries(send: list[str], expect: list[Regex]) -> tuple[QueryResponse, ...]:
    """prober's simple form as query_response entries: round i sends `send[i]` (an empty one
    sends nothing) and then expects `expect[i]`; a line sent this way is never expanded."""
    entries: list[QueryResponse] = []
    for index in range(max(len(send), len(expect))):
        if index < len(send) and send[index]:
            entries.append(QueryResponse(send=send[index]))
        if index < len(expect):
            entries.append(QueryResponse(expect=expect[index]))
    return tuple(entries)

"""The records of a DNS response as blackbox_exporter shows them, and its `validate_*_rrs`.

blackbox_exporter matches its regexes on miekg/dns's presentation of a whole record, fields
separated by TABs (`api.example.com.<TAB>60<TAB>IN<TAB>A<TAB>10.0.0.1`); dnspython's own
`to_text()` separates them with spaces, so the line is built here, and a regex written for
blackbox_exporter matches the same records in prober.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from prober.config.model_net import RecordValidation
from prober.config.secrets import Redactor
from prober.config.templates import Regex
from prober.result import AssertionOutcome, shown


def record_lines(section: Sequence[dns.rrset.RRset]) -> list[str]:
    """Each record of a section as one TAB-separated line, in the order of the response."""
    lines: list[str] = []
    for rrset in section:
        head = "\t".join(
            (
                rrset.name.to_text(),
                str(rrset.ttl),
                dns.rdataclass.to_text(rrset.rdclass),
                dns.rdatatype.to_text(rrset.rdtype),
            )
        )
        lines.extend(f"{head}\t{rdata.to_text()}" for rdata in rrset)
    return lines


def soa_serial(response: dns.message.Message) -> int:
    """The serial of the last SOA record in the answer section; 0 without one (an SOA in
    the authority section, as a negative answer carries, does not count)."""
    serial = 0
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            for rdata in rrset:
                serial = int(rdata.serial)
    return serial


def validate_records(
    section: str, lines: list[str], rules: RecordValidation, redactor: Redactor
) -> list[AssertionOutcome]:
    """One outcome per configured list of `rules`, judged as blackbox_exporter does."""
    checks = (
        ("fail_if_matches_regexp", rules.fail_if_matches_regexp, _none_match),
        ("fail_if_not_matches_regexp", rules.fail_if_not_matches_regexp, _every_matches_all),
        ("fail_if_all_match_regexp", rules.fail_if_all_match_regexp, _not_all_match),
        ("fail_if_none_matches_regexp", rules.fail_if_none_matches_regexp, _some_match),
    )
    outcomes = []
    for key, patterns, judge in checks:
        if patterns:
            passed, seen = judge(lines, patterns)
            text = f"{section} {key} {', '.join(repr(p.pattern) for p in patterns)}"
            outcomes.append(AssertionOutcome(text, passed, _shown_record(seen, redactor)))
    return outcomes


# Each judge says whether the section passes, and the record that decided (None: none did).
def _none_match(lines: list[str], patterns: list[Regex]) -> tuple[bool, str | None]:
    """No record matches any of the regexes."""
    hit = next((line for line in lines if any(p.found_in(line) for p in patterns)), None)
    return hit is None, hit if hit is not None else _first(lines)


def _every_matches_all(lines: list[str], patterns: list[Regex]) -> tuple[bool, str | None]:
    """Every record matches every regex, and there is at least one record."""
    miss = next((line for line in lines if not all(p.found_in(line) for p in patterns)), None)
    return bool(lines) and miss is None, miss if miss is not None else _first(lines)


def _not_all_match(lines: list[str], patterns: list[Regex]) -> tuple[bool, str | None]:
    """Some (record, regex) pair does not match; an empty section fails ("all of nothing")."""
    miss = next((line for line in lines if not all(p.found_in(line) for p in patterns)), None)
    return miss is not None, miss if miss is not None else _first(lines)


def _some_match(lines: list[str], patterns: list[Regex]) -> tuple[bool, str | None]:
    """At least one record matches at least one of the regexes."""
    hit = next((line for line in lines if any(p.found_in(line) for p in patterns)), None)
    return hit is not None, hit if hit is not None else _first(lines)


def _first(lines: list[str]) -> str | None:
    return lines[0] if lines else None


def _shown_record(line: str | None, redactor: Redactor) -> str:
    if line is None:
        return "<no records>"
    return shown(line.replace("\t", " "), redactor)

"""Secret values: a type that never prints itself, and a redactor for free text."""

from __future__ import annotations

import base64
import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote, unquote_plus

REDACTED = "***"
_MIN_SECRET_LEN = 3
# A form derived from a secret (a slice of its base64) shorter than this could match
# ordinary text by chance; the raw value keeps the shorter minimum above.
_MIN_FORM_LEN = 6
_URLSAFE = str.maketrans("+/", "-_")


class Secret:
    """A sensitive string. `str()` and `repr()` are `***`; `reveal()` is for building requests."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _percent_forms(value: str) -> set[str]:
    """The value as `quote`, `quote(safe="")` and `quote_plus` write it, hex in both cases."""
    forms = {
        quote(value, safe="", errors="surrogateescape"),
        quote(value, errors="surrogateescape"),
        quote_plus(value, errors="surrogateescape"),
    }
    return forms | {_lower_hex(f) for f in forms}


def _lower_hex(text: str) -> str:
    """`%2F` -> `%2f`: some encoders write lower-case hex digits."""
    parts = text.split("%")
    return parts[0] + "".join("%" + p[:2].lower() + p[2:] for p in parts[1:])


def _json_forms(value: str) -> set[str]:
    """The value as it appears inside a JSON string: escaped, ASCII-only or not, `\\/` too."""
    forms = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    return forms | {f.replace("/", "\\/") for f in forms}


def _base64_forms(data: bytes) -> set[str]:
    """The value's base64, alone and inside a longer encoded text such as `user:pass`.

    Inside a longer text the value starts at any byte offset modulo 3; for each offset the
    characters that encode only the value's own bits are the same whatever surrounds it.
    """
    forms = {base64.b64encode(data).decode()}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        start = -(-offset * 4 // 3)
        end = (offset + len(data)) * 4 // 3
        forms.add(encoded[start:end])
    return forms | {f.translate(_URLSAFE) for f in forms}


def secret_forms(value: str) -> set[str]:
    """Every form a secret takes on its way out: raw, percent-encoded, base64, JSON-escaped.

    A value that is not valid UTF-8 (an environment value read with surrogateescape) is
    also covered as it looks once decoded with replacement characters.
    """
    if len(value) < _MIN_SECRET_LEN:
        return set()
    data = value.encode("utf-8", "surrogateescape")
    replaced = data.decode("utf-8", "replace")
    forms = {value, replaced} | _percent_forms(value) | _json_forms(replaced)
    encoded = _base64_forms(data)
    latin1 = _latin1(value)
    if latin1 is not None and latin1 != data:
        # aiohttp's BasicAuth (also made from a URL's userinfo) encodes as Latin-1.
        encoded |= _base64_forms(latin1)
    forms |= {f for f in encoded if len(f) >= _MIN_FORM_LEN}
    return forms


def _latin1(value: str) -> bytes | None:
    """The value's Latin-1 bytes, or None when it has characters beyond Latin-1."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return None


@dataclass(frozen=True, slots=True)
class Redactor:
    """Hides a set of secrets in free text, in every form `secret_forms` lists.

    Built once per set of secrets (a run environment), so each message costs only the
    substring searches; `with_secrets` adds a run's extracted values.
    """

    values: frozenset[str] = frozenset()
    needles: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Iterable[str]) -> Redactor:
        """A redactor for these secret values (very short ones are skipped, see redact())."""
        kept = frozenset(v for v in values if len(v) >= _MIN_SECRET_LEN)
        forms = {form for value in kept for form in secret_forms(value)}
        return cls(kept, tuple(sorted(forms, key=len, reverse=True)))

    def with_secrets(self, values: Iterable[str]) -> Redactor:
        """This redactor plus more secret values; itself when none is new.

        Only the new values' forms are computed, merged into the longest-first order.
        """
        new = {v for v in values if len(v) >= _MIN_SECRET_LEN} - self.values
        if not new:
            return self
        forms = sorted({f for v in new for f in secret_forms(v)}, key=len, reverse=True)
        needles = tuple(heapq.merge(self.needles, forms, key=len, reverse=True))
        return Redactor(self.values | new, needles)

    @property
    def longest(self) -> int:
        """The length of the longest form hidden: how far a secret can reach past a cut."""
        return len(self.needles[0]) if self.needles else 0

    def __call__(self, text: str) -> str:
        """`text` with every form of every secret replaced by `***`."""
        if not text or not self.needles:
            return text
        for needle in self.needles:
            if needle in text:
                text = text.replace(needle, REDACTED)
        return self._decoded(text) if "%" in text else text

    def _decoded(self, text: str) -> str:
        """Percent-decode text in which a secret hides in an encoding not listed (yarl's)."""
        for decode in (unquote, unquote_plus):
            plain = decode(text)
            if plain != text and any(value in plain for value in self.values):
                return self(plain)
        return text

    def excerpt(self, text: str, chars: int) -> str:
        """The first `chars` characters of `text` once redacted, `...` marking a cut.

        Redacts before cutting, so a cut never shows the first part of a secret.
        """
        window = chars + self.longest
        while True:
            head = self(text[:window])
            if window >= len(text) or len(head) >= chars + self.longest:
                break
            window *= 2
        return head if len(head) <= chars and window >= len(text) else head[:chars] + "..."


NO_SECRETS = Redactor()


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret value, in each of its forms, with `***`.

    Very short values are skipped: replacing "a" everywhere would destroy the text and
    reveal more about the secret than it hides.
    """
    return Redactor.of(secrets)(text)

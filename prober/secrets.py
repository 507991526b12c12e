"""Secret values: a type that never prints itself, and a redactor for free text."""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "***"
_MIN_SECRET_LEN = 3


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


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret value in `text` with `***`.

    Very short values are skipped: replacing "a" everywhere would destroy the text and
    reveal more about the secret than it hides.
    """
    for value in sorted(set(secrets), key=len, reverse=True):
        if len(value) >= _MIN_SECRET_LEN and value in text:
            text = text.replace(value, REDACTED)
    return text

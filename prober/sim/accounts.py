"""The simulated platform's population of accounts and the shard each account lives on.

`user-0001` ... `user-NNNN` share one password and are computed from their name, never stored,
so a population of a million costs nothing. An account's shard is a share in [0, 1) taken from
the CRC-32 of its name: the same in every run and every process, so `accounts: 0.3` on a fault
pulls the rack of the same 30% of accounts each time, and a prober can tell which of its
accounts should fail.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

ACCOUNT_PATTERN = "user-{i:04d}"
MAX_ACCOUNTS = 1_000_000
_PREFIX = "user-"
_LISTED_NAMES = 5


def shard_share(username: str) -> float:
    """Where `username`'s shard falls in [0, 1); stable across runs, processes and machines."""
    return zlib.crc32(username.encode()) / 2**32


def account_name(index: int) -> str:
    """The name of the `index`-th generated account (1-based): `user-0001`."""
    return ACCOUNT_PATTERN.format(i=index)


@dataclass(frozen=True, slots=True)
class Population:
    """`count` generated accounts sharing one password; names are parsed, not looked up."""

    count: int
    password: str = field(repr=False)

    def index_of(self, username: str) -> int | None:
        """The 1-based index of a generated account, or None (also for `user-1`, not canonical)."""
        digits = username.removeprefix(_PREFIX)
        if digits == username or not (digits.isascii() and digits.isdigit()):
            return None
        index = int(digits)
        if not 1 <= index <= self.count or account_name(index) != username:
            return None
        return index

    def password_for(self, username: str) -> str | None:
        """The shared password when `username` is one of the population, else None."""
        return self.password if self.index_of(username) is not None else None

    def describe(self) -> dict[str, Any]:
        """The population as `GET /-/accounts` shows it: size, first names, the name pattern."""
        listed = min(self.count, _LISTED_NAMES)
        return {
            "accounts": self.count,
            "names": [account_name(i) for i in range(1, listed + 1)],
            "pattern": ACCOUNT_PATTERN,
        }


class AccountTally:
    """Distinct account names, up to `capacity`, so a long run cannot grow it without bound."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._names: set[str] = set()

    def add(self, name: str) -> None:
        """Remember `name`; once full, new names are no longer counted (see `capped`)."""
        if len(self._names) < self._capacity:
            self._names.add(name)

    def __len__(self) -> int:
        return len(self._names)

    @property
    def capped(self) -> bool:
        """True once full: the count is then a lower bound."""
        return len(self._names) >= self._capacity

    def clear(self) -> None:
        self._names.clear()

"""Which checks this instance runs when several split them (`--shard INDEX/COUNT`).

Rendezvous (highest random weight) hashing: every shard gives each check a weight, a stable
hash of the check's name and the shard's index, and the check goes to the shard with the
highest. Adding an Nth shard moves only the checks it now wins, about 1/N of them, and each
of those to the new shard; `crc32 % N` moved most checks whenever N changed.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prober.config.model import Check

_MASK = (1 << 64) - 1
_POD_ORDINAL = re.compile(r"-(\d+)$")


def _mix(value: int) -> int:
    """splitmix64's finaliser: a bijection of 64-bit values that spreads every input bit."""
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def shard_of(check_name: str, count: int) -> int:
    """The index (0 to count-1) of the shard that runs `check_name`, the same in every process.

    One blake2b of the name, then a cheap mix per shard: distinct shards never tie, since
    `_mix` is a bijection and the inputs differ.
    """
    digest = hashlib.blake2b(check_name.encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "big")
    return max(range(count), key=lambda index: _mix(key ^ _mix(index + 1)))


@dataclass(frozen=True, slots=True)
class Shard:
    """This instance runs the checks that shard `index` of `count` wins."""

    index: int
    count: int

    def owns(self, check_name: str) -> bool:
        return shard_of(check_name, self.count) == self.index


def owned_checks(checks: Iterable[Check], shard: Shard | None) -> dict[str, Check]:
    """name -> check, for the checks this instance runs: every one without a shard."""
    return {c.name: c for c in checks if shard is None or shard.owns(c.name)}


def parse_shard(text: str | None, env: Mapping[str, str] = os.environ) -> Shard | None:
    """`INDEX/COUNT`, or `auto`: INDEX from the host name `name-N` (a StatefulSet pod),
    COUNT from PROBER_SHARD_COUNT; None for no text (every check). Raises ValueError."""
    if not text:
        return None
    if text == "auto":
        host = env.get("HOSTNAME") or socket.gethostname()
        ordinal = _POD_ORDINAL.search(host)
        count = env.get("PROBER_SHARD_COUNT", "")
        if ordinal is None:
            raise ValueError(f"--shard auto: host name {host!r} does not end in -N (a pod ordinal)")
        if not count.isdigit():
            raise ValueError("--shard auto needs PROBER_SHARD_COUNT set to the number of shards")
        text = f"{ordinal.group(1)}/{count}"
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise ValueError(f"--shard {text!r} must be INDEX/COUNT with 0 <= INDEX < COUNT")
    return Shard(int(index), int(count))

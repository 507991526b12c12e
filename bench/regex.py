"""The catastrophic regex case, before (Python's backtracking `re`) and after (RE2).

`python -m bench.regex` prints how long one search of `^(a+)+$` takes against `n` a's
followed by `!`: Python's `re` doubles its time with every extra character, RE2 (what
prober compiles user regexes with, `prober.config.templates.compile_regex`) stays linear up to the
default 1 MiB body cap. Python's `re` is only run on short inputs, where it still ends.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

from prober.config.templates import compile_regex

PATTERN = "^(a+)+$"
BACKTRACKING_SIZES = (16, 18, 20, 22, 24)
RE2_SIZES = (24, 30_000, 1 << 20)


def _seconds(search: Callable[[str], object], text: str, repeat: int) -> float:
    """The best of `repeat` timings of one search, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        search(text)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Print one line per engine and input size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="timings per size (best kept)")
    args = parser.parse_args()
    backtracking = re.compile(PATTERN)
    linear = compile_regex(PATTERN)
    print(f"pattern {PATTERN!r} against 'a' * n + '!' (no match), best of {args.repeat}")
    for n in BACKTRACKING_SIZES:
        took = _seconds(backtracking.search, "a" * n + "!", args.repeat)
        print(f"python re  n={n:>9,}  {took * 1000:12.3f} ms")
    for n in RE2_SIZES:
        took = _seconds(linear.found_in, "a" * n + "!", args.repeat)
        print(f"re2        n={n:>9,}  {took * 1000:12.3f} ms")


if __name__ == "__main__":
    main()

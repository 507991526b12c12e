"""Watch the config files; call back when their content changes (auto-reload).

Each poll fingerprints every file (mtime, size and a SHA-256 of the content) in a thread of
its own with a time limit (config.load_off_loop), so neither the event loop nor a stop waits
on the disk; files are read as loading reads them (regular files only, size-capped). The
set of files is recomputed on every poll from the running config: the main file, every file
its `check_files` globs match now (a new check file counts as a change), its `file:` secrets
and any extra files (the web config).
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from prober.config.load import (
    MAX_CONFIG_BYTES,
    Config,
    ConfigError,
    check_file_matches,
    load_off_loop,
    read_bounded,
)
from prober.sinks.log import Throttled

log = logging.getLogger("prober.engine.watch")

# mtime_ns, size, sha256 hex; None when the file is missing or unreadable.
Fingerprint = dict[str, tuple[int, int, str] | None]


def watched_files(main: Path, config: Config | None, extra: Iterable[Path] = ()) -> list[Path]:
    """Every file the config was built from, globs expanded now; relative to the main file."""
    files = [main, *extra]
    if config is not None:
        base = main.parent
        for pattern in config.settings.check_files:
            files.extend(check_file_matches(base, pattern))
            if not glob.has_magic(pattern):
                files.append(base / pattern)
        for source in config.settings.secrets.values():
            if source.file is not None:
                files.append(base / source.file)
    return sorted(set(files))


def fingerprint(files: Iterable[Path]) -> Fingerprint:
    """What each file looks like now. Blocking: run it in a thread."""
    prints: Fingerprint = {}
    for file in files:
        try:
            stat = file.stat()
            digest = hashlib.sha256(read_bounded(file, MAX_CONFIG_BYTES)).hexdigest()
        except OSError:
            prints[str(file)] = None
            continue
        prints[str(file)] = (stat.st_mtime_ns, stat.st_size, digest)
    return prints


async def watch(
    list_files: Callable[[], list[Path]],
    interval: float,
    on_change: Callable[[], Awaitable[object]],
    name: str = "config",
) -> None:
    """Poll every `interval` seconds; await `on_change()` once per observed change.

    A failed reload is not retried until the files change again (the error is logged once).
    A poll that cannot read the files in time changes nothing. Runs until cancelled. `name`
    (the main config file) tells one watch's stuck reads from another's.
    """
    unreadable = Throttled(log, "config files not read in time; polling on")

    async def snapshot() -> Fingerprint | None:
        try:
            return await load_off_loop(lambda: fingerprint(list_files()), f"watch of {name}")
        except ConfigError as exc:
            unreadable.note(errors=str(exc))
            return None

    last = await snapshot()
    while True:
        await asyncio.sleep(interval)
        now = await snapshot()
        if now is None or now == last:
            continue
        last = last or {}  # the first read failed: whatever is there now is news
        changed = sorted(f for f in set(now) | set(last) if now.get(f) != last.get(f))
        log.info("config files changed, reloading", extra={"files": ",".join(changed)})
        last = now
        await on_change()

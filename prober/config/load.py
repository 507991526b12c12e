"""Load prober.yml and checks/*.yml into an immutable Config, with located errors.

The pipeline: read (bounded, YAML with lines: read.py) -> substitute `${VAR}` (substitute.py)
-> validate (pydantic: validate.py) -> resolve (resolve.py). Every step adds located issues
to one list, so a load reports every problem at once, sorted by file and line. Errors never
echo values: a value may have come from the environment and be a secret.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from prober.config.located import ConfigError, ConfigIssue, in_file_order
from prober.config.model import Check, GlobalConfig
from prober.config.read import (
    MAX_ALIAS_NODES,
    MAX_CONFIG_BYTES,
    MAX_SECRET_BYTES,
    ConfigDocument,
    read_bounded,
    read_document,
    track_opened,
    unreadable,
)
from prober.config.resolve import resolve_checks, sensitive_values
from prober.config.secrets import Secret
from prober.config.shared_fate import shared_fate_warnings
from prober.config.substitute import substitute
from prober.config.validate import validate_check_file, validate_checks, validate_settings

__all__ = [
    "LOAD_SECONDS",
    "MAX_ALIAS_NODES",
    "MAX_CONFIG_BYTES",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "check_file_matches",
    "load_config",
    "load_off_loop",
    "read_bounded",
    "shared_fate_warnings",
]

_T = TypeVar("_T")
LOAD_SECONDS = 30.0


@dataclass(frozen=True)
class Config:
    """A loaded, validated config: the daemon's whole input, compared as a value on reload."""

    settings: GlobalConfig
    checks: tuple[Check, ...]
    secrets: Mapping[str, Secret] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    sensitive_values: frozenset[str] = frozenset()
    files: tuple[str, ...] = ()

    def check(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def template_values(self) -> dict[str, str | Secret]:
        """Names a request template may use besides extracted variables: env, then secrets.

        Secrets stay `Secret`s: only rendering a template into a request reveals them.
        """
        values: dict[str, str | Secret] = dict(self.env)
        values.update(self.secrets)
        return values


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, substitute, validate and resolve the config; raise ConfigError with every issue."""
    env = dict(os.environ if env is None else env)
    main = read_document(Path(path))
    issues: list[ConfigIssue] = []
    substitute(main, env, issues)
    settings = validate_settings(main, issues)
    entries = validate_checks(main, settings.timing, issues)
    documents = [main]
    for file in _expand_check_files(main, settings.check_files, issues):
        try:
            doc = read_document(file)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        substitute(doc, env, issues)
        documents.append(doc)
        entries.extend(validate_check_file(doc, settings.timing, issues))
    secrets = _load_secrets(main, settings, env, issues)
    checks = resolve_checks(entries, settings.timing, set(env) | set(secrets), issues)
    if issues:
        raise ConfigError(in_file_order(issues, [d.file for d in documents]))
    return Config(
        settings=settings,
        checks=tuple(checks),
        secrets=secrets,
        env=env,
        sensitive_values=sensitive_values(checks, secrets, env)
        | {value for doc in documents for value in doc.sent if value},
        files=tuple(doc.file for doc in documents),
    )


def _expand_check_files(
    main: ConfigDocument, patterns: list[str], issues: list[ConfigIssue]
) -> Iterator[Path]:
    base = Path(main.file).parent
    for index, pattern in enumerate(patterns):
        matches = check_file_matches(base, pattern)
        if not matches and not glob.has_magic(pattern):
            issues.append(main.issue(("check_files", index), f"file {pattern!r} does not exist"))
        yield from matches


def check_file_matches(base: Path, pattern: str) -> list[Path]:
    """The files a `check_files` pattern matches now, sorted; relative patterns start at `base`
    (the main file's folder)."""
    return [Path(match) for match in sorted(glob.glob(str(base / pattern)))]


def _load_secrets(
    main: ConfigDocument, settings: GlobalConfig, env: Mapping[str, str], issues: list[ConfigIssue]
) -> dict[str, Secret]:
    """Each secret's value from its environment variable or file, typed from here on."""
    secrets: dict[str, Secret] = {}
    for name, source in settings.secrets.items():
        where = ("secrets", name)
        if source.env is not None:
            value = env.get(source.env, source.default)
            if value is None:
                issues.append(main.issue(where, f"environment variable {source.env} is not set"))
                continue
        else:
            file = Path(str(source.file))
            if not file.is_absolute():
                file = Path(main.file).parent / file
            try:
                value = read_bounded(file, MAX_SECRET_BYTES).decode("utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = unreadable(exc)
                issues.append(main.issue(where, f"cannot read secret file {file}: {reason}"))
                continue
        secrets[name] = Secret(value)
    return secrets


# Loads that outlived their limit and still block their thread, by what they load: while one
# hangs (a dead network mount), the next load of the same thing fails at once instead of
# stranding one more thread.
_STUCK: dict[str, threading.Thread] = {}


async def load_off_loop(load: Callable[[], _T], name: str, limit: float = LOAD_SECONDS) -> _T:
    """`load()` in a daemon thread of its own; a ConfigError if it is not done in `limit` s.

    Not asyncio.to_thread: asyncio.run waits at exit for the default executor's threads, so
    one read stuck on a hung file system would keep SIGTERM from ever stopping the daemon.
    """
    stuck = _STUCK.get(name)
    if stuck is not None and stuck.is_alive():
        issue = ConfigIssue(name, "an earlier load has not returned yet: a hung file system?")
        raise ConfigError([issue])
    _STUCK.pop(name, None)
    outcome: concurrent.futures.Future[_T] = concurrent.futures.Future()
    opened: list[str] = []

    def work() -> None:
        track_opened(opened)
        outcome.set_running_or_notify_cancel()  # running: giving up later cannot cancel it
        try:
            outcome.set_result(load())
        except Exception as exc:  # handed to the awaiting task, which raises it
            outcome.set_exception(exc)

    thread = threading.Thread(target=work, name=f"prober-load {name}", daemon=True)
    thread.start()
    try:
        async with asyncio.timeout(limit):
            return await asyncio.wrap_future(outcome)
    except TimeoutError:
        _STUCK[name] = thread
        where = opened[-1] if opened else name
        message = f"still reading after {limit:g}s: a hung file system? (the running config stays)"
        raise ConfigError([ConfigIssue(where, message)]) from None

"""Load prober.yml and checks/*.yml into an immutable Config, with located errors.

Errors name the file, the line, the check and the key path, and never echo values: a value
may have come from the environment and be a secret.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import glob
import os
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import TypeAdapter, ValidationError

from prober.config.model import (
    CHECK_KINDS,
    Check,
    CheckFile,
    FlowCheck,
    GlobalConfig,
    HttpCheck,
    RequestSpec,
    check_kind,
    parse_duration,
    valid_name,
)
from prober.config.secrets import Secret, redact
from prober.config.templates import Template, TemplateError, compile_template

Path_ = tuple[str | int, ...]
_ModelT = TypeVar("_ModelT", GlobalConfig, CheckFile)
_UNION_TAGS = frozenset(CHECK_KINDS)
_REQUEST_TEMPLATE_KEYS = frozenset({"url", "headers", "body", "json", "proxy_url"})
_T = TypeVar("_T")

# What loading may read. A reload comes from outside (SIGHUP, the file watch, /-/reload), so
# nothing a file is, holds or hangs on may wedge it: only regular files, this big, this long.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_SECRET_BYTES = 1024 * 1024
LOAD_SECONDS = 30.0
_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFDIR: "a directory",
}
# Aliases may add at most this many nodes to a document, counted before anything is built:
# a 342-byte "billion laughs" file would otherwise expand to 387 million.
MAX_ALIAS_NODES = 500_000
MAX_DEPTH = 100


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in the config, located as precisely as the YAML allows."""

    file: str
    message: str
    line: int | None = None
    check: str | None = None
    key: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        parts = [where]
        if self.check:
            parts.append(f"check {self.check!r}")
        if self.key:
            parts.append(self.key)
        return ": ".join(parts) + f": {self.message}"


class ConfigError(Exception):
    """The config cannot be used; `issues` lists every located problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


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

    def template_values(self) -> dict[str, str]:
        """Names a request template may use besides extracted variables: env, then secrets."""
        values = dict(self.env)
        values.update({name: s.reveal() for name, s in self.secrets.items()})
        return values


@dataclass
class ConfigDocument:
    file: str
    data: Any
    lines: dict[Path_, int]
    substituted: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)

    def line_of(self, path: Path_) -> int | None:
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def check_name(self, path: Path_) -> str | None:
        if len(path) >= 2 and path[0] == "checks" and isinstance(path[1], int):
            checks = self.data.get("checks") if isinstance(self.data, dict) else None
            if isinstance(checks, list) and path[1] < len(checks):
                item = checks[path[1]]
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    return str(item["name"])
            return f"#{path[1] + 1}"
        return None

    def issue(self, path: Path_, message: str) -> ConfigIssue:
        """A located issue; values substituted from the environment are masked in it."""
        return ConfigIssue(
            self.file,
            redact(message, self.substituted),
            self.line_of(path),
            self.check_name(path),
            _key_path(path),
        )


def _key_path(path: Path_) -> str:
    out = ""
    for part in path:
        # YAML allows keys of any type (null, numbers): show them as text.
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, substitute, validate and resolve the config; raise ConfigError with every issue."""
    env = dict(os.environ if env is None else env)
    main = read_document(Path(path))
    issues: list[ConfigIssue] = []
    _substitute(main, env, issues)
    parsed, entries = _validate(main, GlobalConfig, issues)
    settings = parsed if parsed is not None else _lenient_settings(main.data)
    documents = [main]
    for file in _expand_check_files(main, settings.check_files, issues):
        try:
            doc = read_document(file)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        _substitute(doc, env, issues)
        documents.append(doc)
        entries.extend(_validate(doc, CheckFile, issues)[1])
    secrets = _load_secrets(main, settings, env, issues)
    checks = _resolve_checks(entries, settings, set(env) | set(secrets), issues)
    if issues:
        raise ConfigError(_in_file_order(issues, [d.file for d in documents]))
    return Config(
        settings=settings.model_copy(update={"checks": []}),
        checks=tuple(checks),
        secrets=secrets,
        env=env,
        sensitive_values=_sensitive_values(checks, secrets, env)
        | {value for doc in documents for value in doc.sent if value},
        files=tuple(doc.file for doc in documents),
    )


def _in_file_order(issues: list[ConfigIssue], files: list[str]) -> list[ConfigIssue]:
    """Issues by file (main file first, then check files as loaded), then by line."""
    rank = {file: i for i, file in enumerate(files)}
    return sorted(issues, key=lambda i: (rank.get(i.file, -1), i.line or 0))


def shared_fate_warnings(config: Config) -> list[str]:
    """A warning for each canary that probes the same host and port as a platform check.

    Such a canary fails together with the platform's host, and the prober then blames itself
    for the outage it exists to report (its alerts are held back while it is impaired).
    """
    values = config.template_values()
    platform: dict[tuple[str, int], str] = {}
    for check in config.checks:
        if not check.canary:
            for endpoint in _endpoints(check, values):
                platform.setdefault(endpoint, check.name)
    warnings = []
    for check in config.checks:
        if check.canary:
            for host, port in _endpoints(check, values):
                other = platform.get((host, port))
                if other is not None:
                    warnings.append(
                        f"check {check.name!r}: this canary probes {host}:{port}, like "
                        f"platform check {other!r}; when that host stops the prober would "
                        "blame itself. Point it at an endpoint apart from the platform "
                        "(CANARY_URL, `prober reference`)."
                    )
    return warnings


def _endpoints(check: Check, values: Mapping[str, str]) -> set[tuple[str, int]]:
    """The (host, port) pairs a check connects to, as far as its config tells."""
    if isinstance(check, HttpCheck | FlowCheck):
        requests = check.steps if isinstance(check, FlowCheck) else [check]
        found = set()
        for request in requests:
            try:
                parts = urlsplit(request.url.render(values))
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except (TemplateError, ValueError):
                continue
            if parts.hostname:
                found.add((parts.hostname, port))
        return found
    target = getattr(check, "target", None)
    if isinstance(target, str):
        host, _, port_text = target.rpartition(":")
        return {(host.strip("[]"), int(port_text))}
    return set()


# The files the current load has opened, last one last: names the one a hung load is stuck on.
_OPENED: ContextVar[list[str] | None] = ContextVar("_OPENED", default=None)


def read_bounded(path: Path, limit: int) -> bytes:
    """The content of a regular file of at most `limit` bytes, else an OSError saying why.

    Opened non-blocking, so a FIFO fails at once instead of waiting for a writer, and the
    type is checked on the open descriptor, so a file swapped for a FIFO cannot slip by.
    """
    opened = _OPENED.get()
    if opened is not None:
        opened.append(str(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(mode), "special")
            raise OSError(errno.EINVAL, f"not a regular file ({kind})")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"larger than the {limit >> 20} MiB limit")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


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
        _OPENED.set(opened)
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


def read_document(path: Path) -> ConfigDocument:
    """One YAML file with the line of every key; unreadable or invalid YAML is a ConfigError."""
    name = str(path)
    try:
        raw = read_bounded(path, MAX_CONFIG_BYTES).decode("utf-8")
        text = raw.replace("\r\n", "\n").replace("\r", "\n")  # as open() in text mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError([ConfigIssue(name, f"cannot read file: {reason}")]) from None
    try:
        node, data = _parse_yaml(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError([ConfigIssue(name, f"invalid YAML: {exc.problem}", line)]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        message = f"invalid YAML: character #x{exc.character:04x} is not allowed"
        raise ConfigError([ConfigIssue(name, message, line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(name, f"invalid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(name, "the file must hold a mapping (key: value)", 1)])
    lines: dict[Path_, int] = {}
    if node is not None:
        _record_lines(node, (), lines)
    return ConfigDocument(name, data, lines)


# libyaml's loader (when PyYAML was built with it) parses a 10,000-check file about five
# times faster; both give the same nodes, marks and data.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the plain data of one YAML document."""
    loader = _SAFE_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_shape(node)
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_shape(root: yaml.Node) -> None:
    """Refuse a document nested over MAX_DEPTH, with an alias inside its own anchor, or whose
    aliases add over MAX_ALIAS_NODES nodes, before anything is built from it.

    An alias is the anchored node itself, again: each node is sized once, so this is one pass
    over the nodes as written, however often aliases repeat them.
    """
    sizes: dict[int, int] = {}  # node id -> its size with aliases expanded
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            entered.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            # Nodes counted beyond the distinct ones seen so far can only come from aliases.
            if sizes[key] - len(sizes) > MAX_ALIAS_NODES:
                raise _shape_error(node, f"aliases expand it by over {MAX_ALIAS_NODES} nodes")
            continue
        if key in sizes:
            continue
        if key in entered:
            raise _shape_error(node, "an alias refers to a node that contains it")
        if depth > MAX_DEPTH:
            raise _shape_error(node, f"nested deeper than {MAX_DEPTH} levels")
        entered.add(key)
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in _children(node))


def _shape_error(node: yaml.Node, problem: str) -> yaml.MarkedYAMLError:
    return yaml.MarkedYAMLError(problem=problem, problem_mark=node.start_mark)


def _record_lines(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    # A key's own line wins over the line where its (block) value starts.
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                lines[(*path, key.value)] = key.start_mark.line + 1
                _record_lines(value, (*path, key.value), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), lines)


def _is_request_template(path: Path_) -> bool:
    """Request fields of checks and steps keep `${...}` for run time (variables, secrets)."""
    if len(path) >= 3 and path[0] == "checks" and path[2] in _REQUEST_TEMPLATE_KEYS:
        return True
    return (
        len(path) >= 5
        and path[0] == "checks"
        and path[2] == "steps"
        and (path[4] in _REQUEST_TEMPLATE_KEYS)
    )


def _is_sent_data(path: Path_) -> bool:
    """Strings a tcp check sends: environment values in them are treated as secrets."""
    return len(path) >= 4 and path[0] == "checks" and path[2] == "send"


def _substitute(doc: ConfigDocument, env: Mapping[str, str], issues: list[ConfigIssue]) -> None:
    def walk(value: Any, path: Path_) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value and not _is_request_template(path):
            try:
                template = compile_template(value)
                used = {env[n] for n in template.names if n in env}
                doc.substituted.update(used)
                if _is_sent_data(path):
                    doc.sent.update(used)
                return template.render(env)
            except TemplateError as exc:
                issues.append(doc.issue(path, f"environment {exc}"))
        return value

    doc.data = walk(doc.data, ())


_CHECK_ADAPTER: TypeAdapter[Check] = TypeAdapter(Check)


@dataclass(frozen=True, slots=True)
class CheckEntry:
    """One check as written (`raw`, for the rules across fields) and as validated (or None)."""

    doc: ConfigDocument
    index: int
    raw: Any
    check: Check | None


def _validate(
    doc: ConfigDocument, model: type[_ModelT], issues: list[ConfigIssue]
) -> tuple[_ModelT | None, list[CheckEntry]]:
    """Validate the file, each check on its own so one bad check hides no other's errors.

    When the file's own keys are invalid, the checks are still validated and returned, so
    one run of `prober validate` reports everything.
    """
    data = dict(doc.data)
    raw_checks = data.pop("checks", None) or []
    if not isinstance(raw_checks, list):
        issues.append(doc.issue(("checks",), "must be a list of checks"))
        raw_checks = []
    entries: list[CheckEntry] = []
    for index, raw in enumerate(raw_checks):
        check: Check | None = None
        try:
            check = _CHECK_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            report_errors(doc, exc, ("checks", index), issues)
        entries.append(CheckEntry(doc, index, raw, check))
    valid = [e.check for e in entries if e.check is not None]
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        report_errors(doc, exc, (), issues)
        return None, entries
    return parsed.model_copy(update={"checks": valid}), entries


def _lenient_settings(data: Any) -> GlobalConfig:
    """The main file's settings without its invalid keys: enough to go on finding errors."""
    kept = {k: v for k, v in dict(data).items() if k != "checks"}
    while True:
        try:
            return GlobalConfig.model_validate(kept)
        except ValidationError as exc:
            bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
            if not bad & set(kept):
                return GlobalConfig()
            kept = {k: v for k, v in kept.items() if k not in bad}


def report_errors(
    doc: ConfigDocument, exc: ValidationError, prefix: Path_, issues: list[ConfigIssue]
) -> None:
    """Turn pydantic's errors into located issues (never echoing the values)."""
    for error in exc.errors(include_input=False, include_url=False):
        path = _data_path(doc.data, (*prefix, *error["loc"]))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        issues.append(doc.issue(path, message))


def _data_path(data: Any, loc: tuple[int | str, ...]) -> Path_:
    """Map a pydantic error location onto the YAML data, dropping union tags it adds."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in _UNION_TAGS and part not in node:
            continue
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        path.append(part)
    return tuple(path)


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
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                issues.append(main.issue(where, f"cannot read secret file {file}: {reason}"))
                continue
        secrets[name] = Secret(value)
    return secrets


def _resolve_checks(
    entries: list[CheckEntry],
    settings: GlobalConfig,
    known_names: set[str],
    issues: list[ConfigIssue],
) -> list[Check]:
    """Apply the rules across fields and files to every check, valid or not, and fill in
    the defaults of the valid ones."""
    resolved: list[Check] = []
    seen: dict[str, str] = {}
    for entry in entries:
        doc, path, raw = entry.doc, ("checks", entry.index), entry.raw
        if not isinstance(raw, dict):
            continue
        name = raw.get("name")
        if isinstance(name, str) and name in seen:
            message = f"check name {name!r} is also used in {seen[name]}"
            issues.append(doc.issue((*path, "name"), message))
            continue
        if isinstance(name, str):
            seen[name] = doc.file
        _check_timing(doc, path, raw, settings, issues)
        _check_templates(doc, path, raw, known_names, issues)
        if entry.check is not None:
            check = entry.check
            interval = check.interval or settings.interval
            timeout = check.timeout or _default_timeout(settings, interval)
            update: dict[str, Any] = {"interval": interval, "timeout": timeout}
            if isinstance(check, FlowCheck) and check.accounts is not None:
                update["account_names"] = _account_names(doc, path, check, issues)
            resolved.append(check.model_copy(update=update))
    return resolved


# A check that sets no timeout gets the global one, capped to leave room before its next run.
_DEFAULT_TIMEOUT_SHARE = 0.8


def _default_timeout(settings: GlobalConfig, interval: float) -> float:
    """The global timeout, or 80% of the interval where that is shorter."""
    return min(settings.timeout, interval * _DEFAULT_TIMEOUT_SHARE)


def _account_names(
    doc: ConfigDocument, path: Path_, check: FlowCheck, issues: list[ConfigIssue]
) -> tuple[str, ...]:
    """The pool's names: listed, from the pattern, or one per line of its file."""
    pool = check.accounts
    assert pool is not None
    names = pool.expand()
    where = (*path, "accounts", "file")
    if pool.file is not None:
        file = Path(pool.file)
        if not file.is_absolute():
            file = Path(doc.file).parent / file
        try:
            text = read_bounded(file, MAX_CONFIG_BYTES).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
            issues.append(doc.issue(where, f"cannot read accounts file {file}: {reason}"))
            return ()
        lines = [line.strip() for line in text.splitlines()]
        names = tuple(line for line in lines if line and not line.startswith("#"))
        bad = next((n for n in names if not valid_name(n)), None)
        if bad is not None or not names:
            message = "has no account names" if not names else "has a name that is not valid"
            issues.append(doc.issue(where, f"accounts file {file} {message}"))
            return ()
        if check.fanout > len(names):
            message = f"fanout {check.fanout} is more than the {len(names)} accounts"
            issues.append(doc.issue((*path, "fanout"), message))
    return names


def _raw_duration(raw: dict[str, Any], key: str) -> float | None:
    """A duration key as written, or None when it is absent or invalid (reported elsewhere)."""
    try:
        value = parse_duration(raw[key])
    except (KeyError, ValueError):
        return None
    return float(value) if isinstance(value, float) and value >= 0 else None


def _check_timing(
    doc: ConfigDocument,
    path: Path_,
    raw: dict[str, Any],
    settings: GlobalConfig,
    issues: list[ConfigIssue],
) -> None:
    """Every attempt, with retries and backoff, must end before the next run is due."""
    retries = raw.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
        return
    interval = _raw_duration(raw, "interval") or settings.interval
    timeout = _raw_duration(raw, "timeout") or _default_timeout(settings, interval)
    backoff = _raw_duration(raw, "retry_backoff")
    budget = timeout * (retries + 1) + (0.2 if backoff is None else backoff) * retries
    if budget >= interval:
        what = "timeout" if not retries else "timeout x (retries + 1) plus backoff"
        issues.append(
            doc.issue(
                (*path, "timeout"),
                f"{what} ({budget:g}s) must be below interval ({interval:g}s)",
            )
        )


def _check_templates(
    doc: ConfigDocument,
    path: Path_,
    raw: dict[str, Any],
    known: set[str],
    issues: list[ConfigIssue],
) -> None:
    """Every `${name}` must be an env var, a secret, or extracted by an earlier step."""
    requests = _raw_requests(raw)
    available = set(known)
    if raw.get("accounts") is not None:
        available.add("account")  # each run's account from the pool
    # A session's variables may come from a cached login of the same session.
    available |= {n for _, r in requests if r.get("session") for n in _extract_names(r)}
    for where, request in requests:
        for key, template in _raw_templates(request):
            missing = [p for p in _unresolved(template) if p not in available]
            if missing:
                issues.append(
                    doc.issue(
                        (*path, *where, *key),
                        f"unknown variable {missing[0]!r}: not set in the "
                        "environment, not a secret, not extracted by an "
                        "earlier step",
                    )
                )
        available |= _extract_names(request)


def _raw_requests(raw: dict[str, Any]) -> list[tuple[Path_, dict[str, Any]]]:
    """The requests of an http check (itself) or a flow (its steps), as written."""
    kind = check_kind(raw)
    if kind == "http":
        return [((), raw)]
    steps = raw.get("steps")
    if kind != "flow" or not isinstance(steps, list):
        return []
    return [(("steps", i), step) for i, step in enumerate(steps) if isinstance(step, dict)]


def _extract_names(request: dict[str, Any]) -> set[str]:
    extract = request.get("extract")
    return {str(n) for n in extract} if isinstance(extract, dict) else set()


def _raw_templates(request: dict[str, Any]) -> Iterator[tuple[Path_, Template]]:
    """The templates of a request as written; malformed ones have field errors already."""
    candidates: list[tuple[Path_, Any]] = [
        ((key,), request.get(key)) for key in ("url", "proxy_url", "body")
    ]
    headers = request.get("headers")
    if isinstance(headers, dict):
        candidates += [(("headers", name), value) for name, value in headers.items()]
    for key, value in candidates:
        if isinstance(value, str):
            with contextlib.suppress(TemplateError):
                yield key, compile_template(value)
    with contextlib.suppress(TemplateError):
        yield from list(_json_templates(request.get("json"), ("json",)))


def _unresolved(template: Template) -> list[str]:
    return [p.name for p in template.parts if not isinstance(p, str) and p.default is None]


def request_templates(request: RequestSpec) -> Iterator[tuple[Path_, Template]]:
    """Every template of a request with its key path: url, proxy, headers, body, json strings."""
    yield ("url",), request.url
    if request.proxy_url is not None:
        yield ("proxy_url",), request.proxy_url
    for name, template in request.headers.items():
        yield ("headers", name), template
    if request.body is not None:
        yield ("body",), request.body
    yield from _json_templates(request.json_body, ("json",))


def _json_templates(value: Any, path: Path_) -> Iterator[tuple[Path_, Template]]:
    if isinstance(value, str) and "${" in value:
        yield path, compile_template(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _json_templates(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_templates(item, (*path, index))


def _sensitive_values(
    checks: list[Check], secrets: Mapping[str, Secret], env: Mapping[str, str]
) -> frozenset[str]:
    """Secret values, plus env values that headers and bodies use (tokens, passwords).

    Environment values in a tcp check's `send` lines are added by the loader (`sent`).
    """
    values = {s.reveal() for s in secrets.values()}
    for check in checks:
        requests = (
            check.steps
            if isinstance(check, FlowCheck)
            else ([check] if isinstance(check, HttpCheck) else [])
        )
        for request in requests:
            for key, template in request_templates(request):
                if key[0] != "url":
                    values.update(env[n] for n in template.names if n in env and n not in secrets)
    return frozenset(v for v in values if v)

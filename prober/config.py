"""Load prober.yml and checks/*.yml into an immutable Config, with located errors.

Errors name the file, the line, the check and the key path, and never echo values: a value
may have come from the environment and be a secret.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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

import yaml
from pydantic import TypeAdapter, ValidationError

from prober.config_model import Check, CheckFile, FlowCheck, GlobalConfig, HttpCheck, RequestSpec
from prober.extract import Template, TemplateError, compile_template
from prober.secrets import Secret, redact

Path_ = tuple[str | int, ...]
_ModelT = TypeVar("_ModelT", GlobalConfig, CheckFile)
_UNION_TAGS = frozenset({"http", "flow", "tcp", "dns"})
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
    settings = _validate(main, GlobalConfig, issues)
    if settings is None:
        raise ConfigError(issues)
    documents: list[tuple[ConfigDocument, list[Check]]] = [(main, list(settings.checks))]
    for file in _expand_check_files(main, settings.check_files, issues):
        try:
            doc = read_document(file)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        _substitute(doc, env, issues)
        parsed = _validate(doc, CheckFile, issues)
        if parsed is not None:
            documents.append((doc, list(parsed.checks)))
    secrets = _load_secrets(main, settings, env, issues)
    checks = _resolve_checks(documents, settings, set(env) | set(secrets), issues)
    if issues:
        raise ConfigError(issues)
    return Config(
        settings=settings.model_copy(update={"checks": []}),
        checks=tuple(checks),
        secrets=secrets,
        env=env,
        sensitive_values=_sensitive_values(checks, secrets, env)
        | {value for doc, _ in documents for value in doc.sent if value},
        files=tuple(doc.file for doc, _ in documents),
    )


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


def _validate(
    doc: ConfigDocument, model: type[_ModelT], issues: list[ConfigIssue]
) -> _ModelT | None:
    """Validate the file, each check on its own so one bad check hides no other's errors."""
    data = dict(doc.data)
    raw_checks = data.pop("checks", None) or []
    if not isinstance(raw_checks, list):
        issues.append(doc.issue(("checks",), "must be a list of checks"))
        raw_checks = []
    checks: list[Check] = []
    for index, raw in enumerate(raw_checks):
        try:
            checks.append(_CHECK_ADAPTER.validate_python(raw))
        except ValidationError as exc:
            report_errors(doc, exc, ("checks", index), issues)
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        report_errors(doc, exc, (), issues)
        return None
    return parsed.model_copy(update={"checks": checks})


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
    documents: list[tuple[ConfigDocument, list[Check]]],
    settings: GlobalConfig,
    known_names: set[str],
    issues: list[ConfigIssue],
) -> list[Check]:
    resolved: list[Check] = []
    seen: dict[str, str] = {}
    for doc, checks in documents:
        for index, check in enumerate(checks):
            path: Path_ = ("checks", index)
            if check.name in seen:
                issues.append(
                    doc.issue(
                        (*path, "name"),
                        f"check name {check.name!r} is also used in {seen[check.name]}",
                    )
                )
                continue
            seen[check.name] = doc.file
            check = check.model_copy(
                update={
                    "interval": check.interval or settings.interval,
                    "timeout": check.timeout or min(settings.timeout, check.interval or 1e9),
                }
            )
            _check_timing(doc, path, check, issues)
            _check_templates(doc, path, check, known_names, issues)
            resolved.append(check)
    return resolved


def _check_timing(
    doc: ConfigDocument, path: Path_, check: Check, issues: list[ConfigIssue]
) -> None:
    assert check.interval is not None and check.timeout is not None
    budget = check.timeout * (check.retries + 1) + check.retry_backoff * check.retries
    if budget >= check.interval:
        what = "timeout" if not check.retries else "timeout x (retries + 1) plus backoff"
        issues.append(
            doc.issue(
                (*path, "timeout"),
                f"{what} ({budget:g}s) must be below interval ({check.interval:g}s)",
            )
        )


def _check_templates(
    doc: ConfigDocument, path: Path_, check: Check, known: set[str], issues: list[ConfigIssue]
) -> None:
    """Every `${name}` must be an env var, a secret, or extracted by an earlier step."""
    if isinstance(check, HttpCheck):
        requests: list[tuple[Path_, RequestSpec]] = [(path, check)]
    elif isinstance(check, FlowCheck):
        requests = [((*path, "steps", i), step) for i, step in enumerate(check.steps)]
    else:
        return
    available = set(known)
    if isinstance(check, FlowCheck):
        # A session's variables may come from a cached login of the same session.
        available |= {n for s in check.steps if s.session for n in s.extract}
    for where, request in requests:
        for key, template in request_templates(request):
            missing = [p for p in _unresolved(template) if p not in available]
            if missing:
                issues.append(
                    doc.issue(
                        (*where, *key),
                        f"unknown variable {missing[0]!r}: not set in the "
                        "environment, not a secret, not extracted by an "
                        "earlier step",
                    )
                )
        available |= set(request.extract)


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

"""Read input files with bounds, and YAML with the line of every key.

A reload comes from outside (SIGHUP, the file watch, /-/reload), so nothing a file is, holds
or hangs on may wedge it: only regular files, this big; YAML sized before it is built.
"""

from __future__ import annotations

import errno
import os
import stat
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prober.config.located import ConfigError, ConfigIssue, KeyPath, LocatedData, key_path
from prober.config.secrets import redact

MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_SECRET_BYTES = 1024 * 1024
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


@dataclass
class ConfigDocument(LocatedData):
    """One YAML file: its data, the line of every key, and the environment values put in it.

    Issues name the check a path is in and mask the values substituted from the environment.
    """

    substituted: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)

    def check_name(self, path: KeyPath) -> str | None:
        if len(path) >= 2 and path[0] == "checks" and isinstance(path[1], int):
            checks = self.data.get("checks") if isinstance(self.data, dict) else None
            if isinstance(checks, list) and path[1] < len(checks):
                item = checks[path[1]]
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    return str(item["name"])
            return f"#{path[1] + 1}"
        return None

    def issue(self, path: KeyPath, message: str) -> ConfigIssue:
        """A located issue; values substituted from the environment are masked in it."""
        return ConfigIssue(
            self.file,
            redact(message, self.substituted),
            self.line_of(path),
            self.check_name(path),
            key_path(path),
        )


# The files the current load has opened, last one last: names the one a hung load is stuck on.
_OPENED: ContextVar[list[str] | None] = ContextVar("_OPENED", default=None)


def track_opened(files: list[str]) -> None:
    """Append the name of every file this context opens from now on to `files`."""
    _OPENED.set(files)


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


def read_text(path: Path, limit: int = MAX_CONFIG_BYTES) -> str:
    """A bounded file as UTF-8 text with `\\n` line ends; an OSError or UnicodeDecodeError."""
    raw = read_bounded(path, limit).decode("utf-8")
    return raw.replace("\r\n", "\n").replace("\r", "\n")  # as open() in text mode


def unreadable(exc: OSError | UnicodeDecodeError) -> str:
    """Why a file could not be read, without its content."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "not UTF-8 text"


def read_document(path: Path) -> ConfigDocument:
    """One YAML mapping with the line of every key; unreadable or invalid is a ConfigError."""
    name = str(path)
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(name, f"cannot read file: {unreadable(exc)}")]) from None
    doc = parse_document(text, name)
    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigIssue(name, "the file must hold a mapping (key: value)", 1)])
    return doc


def parse_document(text: str, name: str) -> ConfigDocument:
    """YAML text (any top-level value) with the line of every key; invalid is a ConfigError."""
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
    lines: dict[KeyPath, int] = {}
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


def _record_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
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

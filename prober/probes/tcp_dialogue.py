"""The line dialogue of a tcp check, entry by entry as blackbox_exporter's `query_response`:
expect a line, send one (filled from the expect's captures), optionally start TLS.

prober's `send`/`expect` rounds arrive here as entries too (TcpCheck.dialogue), so there is one
way to hold a dialogue. Lines are read up to `\\n` with a trailing `\\r` dropped, as Go's
line scanner does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from prober.config.model_net import QueryResponse
from prober.config.templates import Regex
from prober.probes.context import ProbeContext
from prober.probes.single_step import ProbeFailure
from prober.result import AssertionOutcome, Reason, shown

LINE_LIMIT = 64 * 1024
MAX_READ_BYTES = 1 << 20
_T = TypeVar("_T")


class DialogueState(Protocol):
    """What the dialogue tells the run: what it is doing, what it saw, how much it read."""

    stage: str
    outcomes: list[AssertionOutcome]
    read_bytes: int


async def hold_dialogue(
    entries: tuple[QueryResponse, ...],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    start_tls: Callable[[], Awaitable[None]],
    state: DialogueState,
    ctx: ProbeContext,
) -> None:
    """Each entry in turn: expect, then send, then starttls."""
    for number, entry in enumerate(entries, 1):
        match = None
        if entry.expect is not None:
            match = await _expect(reader, entry.expect, state, ctx)
        if entry.send is not None:
            text = entry.send
            if entry.expect is not None and match is not None:
                text = expand(text, entry.expect, match)
            if text:
                state.stage = f"sending line {number}"
                writer.write(text.encode() + b"\n")
                await guarded_io(writer.drain())
        if entry.starttls:
            await start_tls()


async def _expect(
    reader: asyncio.StreamReader, pattern: Regex, state: DialogueState, ctx: ProbeContext
) -> Any:
    """Read lines until one matches and return the match; the connection closing first fails
    the expectation. RE2 matches in time linear in the line: a hostile line cannot stall the
    loop."""
    state.stage = f"waiting for a line matching {pattern.pattern!r}"
    text = f"expect {pattern.pattern!r}"
    last = ""
    while True:
        try:
            raw = await guarded_io(reader.readline())
        except ValueError:  # a line longer than the stream's limit
            raise ProbeFailure(Reason.PROTOCOL, f"a line longer than {LINE_LIMIT} bytes") from None
        if not raw:
            seen = shown(last, ctx.redactor) or "<closed>"
            state.outcomes.append(AssertionOutcome(text, False, seen))
            raise ProbeFailure(
                Reason.ASSERTION, f"connection closed before a line matched {pattern.pattern!r}"
            )
        state.read_bytes += len(raw)
        if state.read_bytes > MAX_READ_BYTES:
            raise ProbeFailure(Reason.BODY_TOO_LARGE, f"more than {MAX_READ_BYTES} bytes read")
        last = raw.decode("utf-8", "replace").removesuffix("\n").removesuffix("\r")
        match = pattern.compiled.search(last)
        if match is not None:
            state.outcomes.append(AssertionOutcome(text, True, shown(last, ctx.redactor)))
            return match


def expand(template: str, pattern: Regex, match: Any) -> str:
    """`template` with `$1`, `${1}`, `${name}` and `$$` filled from `match`, by the rules of
    Go's `regexp.Expand` (what blackbox_exporter uses): a missing or unmatched group gives
    nothing, and a `$` not followed by a name stays as it is."""
    out: list[str] = []
    rest = template
    while (at := rest.find("$")) >= 0:
        out.append(rest[:at])
        rest = rest[at + 1 :]
        if rest.startswith("$"):
            out.append("$")
            rest = rest[1:]
            continue
        name, after = _group_name(rest)
        if name is None:
            out.append("$")
            continue
        rest = after
        out.append(_group_text(name, pattern, match))
    out.append(rest)
    return "".join(out)


def _group_name(text: str) -> tuple[str | None, str]:
    """The group named at the start of `text` (`1`, `name`, `{1x}`) and what follows it."""
    braced = text.startswith("{")
    body = text[1:] if braced else text
    length = 0
    while length < len(body) and (body[length].isalnum() or body[length] == "_"):
        length += 1
    if length == 0:
        return None, text
    name, after = body[:length], body[length:]
    if braced:
        if not after.startswith("}"):
            return None, text
        after = after[1:]
    return name, after


def _group_text(name: str, pattern: Regex, match: Any) -> str:
    index = int(name) if name.isdigit() else pattern.compiled.groupindex.get(name, -1)
    if not 0 <= index <= pattern.groups:
        return ""
    value = match.group(index)
    return value if isinstance(value, str) else ""


async def guarded_io(awaitable: Awaitable[_T]) -> _T:
    """Await a read or write; a peer that resets the connection gives Reason.RESET."""
    try:
        return await awaitable
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise ProbeFailure(Reason.RESET, f"connection reset: {exc}") from None
    except ssl.SSLError as exc:
        raise ProbeFailure(Reason.TLS, f"TLS error: {exc}") from None

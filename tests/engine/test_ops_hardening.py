"""Operations hardening (issue #17, items 7-10), each against real servers and processes:
web server limits, file descriptor shortage, never-reading peers, bounded reloads and YAML
alias bombs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
import textwrap
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import TypeAdapter

from prober.cli.serve import _quiet_fd_shortage
from prober.config.load import (
    MAX_ALIAS_NODES,
    ConfigError,
    load_config,
    load_off_loop,
)
from prober.config.model import Check
from prober.engine.daemon import Daemon
from prober.engine.runner import RunEnvironment, run_check
from prober.result import Reason
from prober.web.app import build_app
from prober.web.server import WebLimits
from tests.support.checks import WriteConfig, http_check
from tests.support.processes import (
    REPO,
    log_message,
    read_base_url,
    read_log_until,
    spawn_prober,
    wait_for,
)
from tests.support.samples import parse_samples, sample_value
from tests.support.servers import Target, free_port
from tests.support.web import serving

CHECK_ADAPTER: TypeAdapter[Check] = TypeAdapter(Check)
CONFIG = """
interval: 0.3s
timeout: 0.2s
checks:
  - {name: good, kind: http, component: api, url: "${URL}/ok"}
"""


@pytest.fixture
async def daemon(
    target: Target, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Daemon]:
    monkeypatch.setenv("URL", target.url)
    running = Daemon(write_config(CONFIG))
    await running.start()
    yield running
    await running.stop()


# --- 7. web server limits (per connection: tests/web/test_server.py) ----------------------


async def test_run_raises_the_soft_fd_limit_to_the_hard_one(write_config: WriteConfig) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard fd limit {hard}: nothing to raise to")
    config = write_config(CONFIG.replace("${URL}", f"http://127.0.0.1:{free_port()}"))
    # Start `prober run` with a soft limit of 256, the hard one unchanged.
    starter = (
        "import os, resource, sys; "
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)); "
        "os.execv(sys.executable, [sys.executable, '-m', 'prober', *sys.argv[1:]])"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        starter,
        *("run", "--config.file", str(config), "--web.listen-address", "127.0.0.1:0"),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # The daemon logs to stderr: its lines up to "serving" are read here, the rest below.
        started = await read_log_until(process, log_message("serving"))
        limits = await asyncio.to_thread(Path(f"/proc/{process.pid}/limits").read_text)
    finally:
        process.terminate()
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    (line,) = [row for row in limits.splitlines() if row.startswith("Max open files")]
    assert line.split()[3:5] == [str(hard), str(hard)], line
    assert "open file limit raised" in "".join(started)
    assert process.returncode == 0, err.decode()


@contextlib.contextmanager
def descriptors_exhausted() -> Iterator[None]:
    """Lower this process's soft fd limit and take every descriptor left, then give back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 32, hard))
    taken: list[int] = []
    try:
        with contextlib.suppress(OSError):
            while True:
                taken.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("kind", ["http", "tcp", "dns"])
async def test_no_descriptor_left_fails_the_run_with_reason_resource(
    kind: str, target: Target, env: RunEnvironment
) -> None:
    port = target.url.rsplit(":", 1)[1]
    fields: dict[str, Any] = {
        "http": {"url": target.at("/ok")},
        "tcp": {"target": f"127.0.0.1:{port}"},
        "dns": {"query_name": "example.org", "server": "127.0.0.1"},
    }[kind]
    check = CHECK_ADAPTER.validate_python(
        {"name": "t", "kind": kind, "component": "api", "interval": 10, "timeout": 2, **fields}
    )
    with descriptors_exhausted():
        result = await run_check(check, env)
    assert result.reason is Reason.RESOURCE, result.message
    assert result.steps and result.steps[-1].reason is Reason.RESOURCE


async def test_daemon_short_of_descriptors_counts_runs_and_logs_one_line(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    def refused() -> float:
        samples = parse_samples(daemon.metrics.render().decode())
        found = sample_value(samples, "prober_check_failures_total", reason="resource")
        return found or 0.0

    caplog.set_level(logging.INFO)
    with descriptors_exhausted():
        await wait_for(lambda: refused() >= 5, limit=20)
    lines = [r for r in caplog.records if "out of file descriptors" in r.getMessage()]
    assert len(lines) == 1
    assert not [r for r in caplog.records if r.exc_info or "check failed" in r.getMessage()]


async def test_accept_short_of_descriptors_logs_one_line_not_a_traceback_each(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.INFO)
    async with serving(build_app(daemon.metrics, daemon), WebLimits()) as server:
        clients = textwrap.dedent(f"""
            import socket, time
            time.sleep(1)  # until the server has no descriptor left
            held = [socket.create_connection(("127.0.0.1", {server.port})) for _ in range(20)]
            time.sleep(2)
        """)
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", clients)
        _quiet_fd_shortage(loop)
        try:
            with descriptors_exhausted():
                await asyncio.wait_for(child.wait(), timeout=30)
        finally:
            loop.set_exception_handler(None)
    assert child.returncode == 0
    lines = [r for r in caplog.records if "web connections wait" in r.getMessage()]
    assert len(lines) == 1
    assert not [r for r in caplog.records if r.name == "asyncio"]


# --- 8. a peer that never reads ---------------------------------------------------------

_SINK = """
import socket, sys, time
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
held = []
while True:
    conn, _ = server.accept()  # accepted, never read from
    held.append(conn)
"""


def sockets_to(port: int) -> int:
    """How many of this process's open sockets are connected to 127.0.0.1:`port`."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                ours.add(link[8:-1])
    count = 0
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in ours:
            count += 1
    return count


async def test_post_to_a_peer_that_never_reads_keeps_no_socket_or_body(
    env: RunEnvironment,
) -> None:
    sink = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SINK, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert sink.stdout is not None
        port = int(await asyncio.wait_for(sink.stdout.readline(), timeout=30))
        body = "x" * (8 << 20)
        check = http_check(f"http://127.0.0.1:{port}/up", method="POST", body=body, timeout=0.3)
        tracemalloc.start()
        try:
            await run_check(check, env)  # warm up: sessions, SSL contexts, caches
            before, _ = tracemalloc.get_traced_memory()
            for _ in range(8):
                result = await run_check(check, env)
                assert result.reason is Reason.TIMEOUT
            await wait_for(lambda: sockets_to(port) == 0)
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # Kept bodies would be 8 x 8 MiB; what stays is far below one.
        assert after - before < (8 << 20), after - before
    finally:
        sink.kill()
        await sink.wait()


# --- 9. bounded reloads -----------------------------------------------------------------

MAIN = """
interval: 0.3s
timeout: 0.2s
secrets: {token: {file: token.txt}}
check_files: [checks/*.yml]
"""
CHECK = """
checks:
  - name: steady
    kind: http
    component: api
    url: "${URL}/ok"
    headers: {Authorization: "Bearer ${token}"}
"""


def fifo_check_file(directory: Path) -> str:
    os.mkfifo(directory / "checks" / "fifo.yml")
    return "fifo.yml: cannot read file: not a regular file (a FIFO)"


def fifo_secret_file(directory: Path) -> str:
    (directory / "token.txt").unlink()
    os.mkfifo(directory / "token.txt")
    return "cannot read secret file"


@pytest.mark.parametrize("breakage", [fifo_check_file, fifo_secret_file], ids=["check", "secret"])
async def test_sighup_with_a_fifo_then_sigterm_exits_promptly(
    breakage: Callable[[Path], str], target: Target, write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "token.txt").write_text("t0ken\n")
    config = write_config(MAIN, steady=CHECK.replace("${URL}", target.url))
    process = await spawn_prober(
        "run", "--config.file", str(config), "--web.listen-address", "127.0.0.1:0"
    )
    try:
        base = await read_base_url(process)

        async def reload_failed() -> bool:
            async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as r:
                samples = parse_samples(await r.text())
            return sample_value(samples, "prober_config_last_reload_successful") == 0

        await wait_for(lambda: target.hits >= 1, limit=30)
        expected = breakage(tmp_path)
        process.send_signal(signal.SIGHUP)
        await wait_for(reload_failed, limit=30)  # a located error, not a hang
        hits = target.hits
        await wait_for(lambda: target.hits > hits, limit=30)  # the running config probes on
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, err = await asyncio.wait_for(process.communicate(), timeout=30)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    assert process.returncode == 0, err.decode()
    assert expected in err.decode() and "not a regular file (a FIFO)" in err.decode()
    assert "Traceback" not in err.decode()


async def test_a_load_that_hangs_fails_in_time_and_strands_no_more_threads(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "hung"
    os.mkfifo(fifo)  # a blocking open() of it waits for a writer: a hung mount, for real
    name = str(tmp_path / "prober.yml")
    with pytest.raises(ConfigError, match=r"still reading after 0\.3s"):
        await load_off_loop(fifo.read_bytes, name, limit=0.3)
    with pytest.raises(ConfigError, match="an earlier load has not returned yet"):
        await load_off_loop(lambda: b"never run", name, limit=0.3)
    # The file system answers again: the stuck thread ends and loading works again.
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the stuck reader is there
    await wait_for(lambda: _loads_again(name))


async def _loads_again(name: str) -> bool:
    try:
        return await load_off_loop(lambda: True, name, limit=5)
    except ConfigError:
        return False


async def test_a_stuck_load_does_not_keep_the_process_from_exiting(tmp_path: Path) -> None:
    fifo = tmp_path / "hung"
    os.mkfifo(fifo)
    script = textwrap.dedent(f"""
        import asyncio
        from pathlib import Path
        from prober.config.load import ConfigError, load_off_loop

        async def main():
            try:
                await load_off_loop(Path({str(fifo)!r}).read_bytes, "x", limit=0.3)
            except ConfigError as exc:
                print(exc, flush=True)

        asyncio.run(main())
    """)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert b"still reading" in out


def _oversized_config(directory: Path) -> tuple[Path, str]:
    path = directory / "prober.yml"
    path.write_bytes(b"# padding\n" * ((16 << 20) // 10 + 1))
    return path, "prober.yml: cannot read file: larger than the 16 MiB limit"


def _oversized_secret(directory: Path) -> tuple[Path, str]:
    (directory / "token.txt").write_bytes(b"x" * ((1 << 20) + 1))
    path = directory / "prober.yml"
    path.write_text("secrets: {token: {file: token.txt}}\n")
    return path, "prober.yml:1: secrets.token: cannot read secret file"


def _fifo_main(directory: Path) -> tuple[Path, str]:
    path = directory / "prober.yml"
    os.mkfifo(path)
    return path, "prober.yml: cannot read file: not a regular file (a FIFO)"


def _device_secret(directory: Path) -> tuple[Path, str]:
    path = directory / "prober.yml"
    path.write_text("secrets: {token: {file: /dev/zero}}\n")
    return path, "/dev/zero: not a regular file (a device)"


@pytest.mark.parametrize(
    "make",
    [_oversized_config, _oversized_secret, _fifo_main, _device_secret],
    ids=["config-over-16MiB", "secret-over-1MiB", "fifo-config", "device-secret"],
)
def test_unreadable_kinds_of_file_are_located_errors(
    make: Callable[[Path], tuple[Path, str]], tmp_path: Path
) -> None:
    path, expected = make(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value)


# --- 10. YAML aliases -------------------------------------------------------------------

# The classic, 342 bytes: nine levels of nine aliases each, 387 million strings expanded.
BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    path = tmp_path / "prober.yml"
    path.write_text(BILLION_LAUGHS)
    assert path.stat().st_size == 342
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = f"prober.yml:6: invalid YAML: aliases expand it by over {MAX_ALIAS_NODES} nodes"
    assert message in str(caught.value)
    assert peak < 16 << 20, peak  # expanded, the file is 387 million nodes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &a [1, *a]\n", "prober.yml:1: invalid YAML: an alias refers to a node that contains"),
        ("a: " + "[" * 150 + "]" * 150 + "\n", "invalid YAML: nested deeper than 100 levels"),
    ],
    ids=["recursive-alias", "nested-150-deep"],
)
def test_recursive_alias_and_deep_nesting_are_located_errors(
    text: str, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / "prober.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value)


def test_ordinary_anchors_and_merge_keys_still_load(tmp_path: Path) -> None:
    first = "  - &base {name: c0, kind: http, component: api, url: 'http://127.0.0.1:9/'}\n"
    others = "".join(f"  - {{<<: *base, name: c{i}}}\n" for i in range(1, 2000))
    path = tmp_path / "prober.yml"
    path.write_text(f"checks:\n{first}{others}")
    config = load_config(path)
    assert len(config.checks) == 2000
    assert config.checks[-1].component == "api"

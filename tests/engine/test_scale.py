"""The pieces that let one daemon hold 10,000 checks: scheduler, concurrency cap, exposition.

Functional tests only: no timing asserts (the figures live in `make bench`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from prober.engine.daemon import Daemon
from prober.engine.scheduler import Scheduler, grid_step
from prober.result import HttpFacts, Phases, Result, StepResult
from prober.sinks.metrics import MetricsSink, SeriesPlan
from tests.support.processes import wait_for
from tests.support.servers import free_port, serve_app

MANY = 10_000


def many_checks(path: Path, count: int, url: str, interval: str = "1h") -> Path:
    lines = [f"interval: {interval}", "timeout: 1s", "labels: {vantage: test}", "checks:"]
    lines += [
        f"  - {{name: c{i:05d}, kind: http, component: part{i % 8}, url: '{url}'}}"
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_ten_thousand_checks_load_and_all_get_scheduled(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/"  # refused at once if a run comes due
    daemon = Daemon(many_checks(tmp_path / "prober.yml", MANY, url))
    await daemon.start()
    try:
        next_runs = daemon._scheduler.next_runs()
        assert len(next_runs) == MANY
        assert all(due <= time.time() + 3600 for due in next_runs.values())
        text = daemon.metrics.render().decode()
        assert 'prober_checks_configured{scope="owned"} 10000.0' in text
        assert daemon.ready
    finally:
        await daemon.stop()


async def test_reload_of_the_same_checks_keeps_every_timer(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    config = many_checks(tmp_path / "prober.yml", 1000, url)
    daemon = Daemon(config)
    await daemon.start()
    try:
        before = daemon._scheduler.next_runs()
        config.touch()
        await daemon.reload()
        after = daemon._scheduler.next_runs()
        assert after.keys() == before.keys()
        # Same timer for every check: due where it was, or one interval on if it ran meanwhile.
        moved = [after[name] - before[name] for name in before]
        assert all(abs(d) < 1e-6 or abs(d - 3600.0) < 1e-6 for d in moved)
    finally:
        await daemon.stop()


def _recorder() -> tuple[Scheduler, list[str], list[float]]:
    ran: list[str] = []
    lags: list[float] = []

    async def run(name: str) -> None:
        ran.append(name)

    return Scheduler(run, lags.append), ran, lags


async def test_scheduler_runs_each_check_repeatedly_and_never_early() -> None:
    scheduler, ran, lags = _recorder()
    scheduler.apply({"a": 0.02, "b": 0.03}, set())
    scheduler.start()
    try:
        await wait_for(lambda: ran.count("a") >= 3 and ran.count("b") >= 3)
    finally:
        scheduler.shutdown()
    assert min(lags) >= 0.0
    assert scheduler.runs_skipped == 0


async def test_scheduler_skips_a_run_while_the_previous_one_still_runs() -> None:
    release = asyncio.Event()
    started: list[str] = []
    skipped: list[int] = []

    async def slow(name: str) -> None:
        started.append(name)
        await release.wait()

    scheduler = Scheduler(slow, lambda _: None, skipped.append)
    scheduler.apply({"slow": 0.01}, set())
    scheduler.start()
    try:
        await wait_for(lambda: sum(skipped) >= 3)
        assert started == ["slow"]
        release.set()
        await wait_for(lambda: len(started) >= 2)
    finally:
        scheduler.shutdown()
    assert scheduler.runs_skipped == sum(skipped)


async def test_a_run_that_cannot_start_is_logged_and_the_others_go_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler, ran, _ = _recorder()
    executor = scheduler._scheduler._executors["default"]
    submit = executor.submit_job

    def broken_for_one(job: Any, run_times: list[Any]) -> None:
        if job.id == "broken":
            raise RuntimeError("a bug in the executor")
        submit(job, run_times)

    monkeypatch.setattr(executor, "submit_job", broken_for_one)
    scheduler.apply({"broken": 0.01, "fine": 0.01}, set())
    scheduler.start()
    try:
        await wait_for(lambda: ran.count("fine") >= 5)  # the timer kept going
    finally:
        scheduler.shutdown()
    assert "broken" not in ran
    assert "starting a run of check 'broken' failed" in caplog.text


async def test_scheduler_coalesces_runs_missed_while_the_loop_was_blocked() -> None:
    scheduler, ran, _ = _recorder()
    scheduler.apply({"a": 0.01}, set())
    scheduler.start()
    try:
        await wait_for(lambda: ran)
        block_until = asyncio.get_running_loop().time() + 0.1
        while asyncio.get_running_loop().time() < block_until:
            pass  # a stalled loop: ten intervals go by without a chance to run
        count = len(ran)
        await wait_for(lambda: len(ran) >= count + 2)
    finally:
        scheduler.shutdown()
    assert scheduler.runs_skipped >= 5


async def test_scheduler_apply_removes_restarts_and_adds() -> None:
    scheduler, _, _ = _recorder()
    scheduler.apply({"keep": 60.0, "change": 60.0, "drop": 60.0}, set())
    scheduler.start()
    try:
        before = scheduler.next_runs()
        scheduler.apply({"keep": 60.0, "change": 60.0, "new": 60.0}, {"change"})
        after = scheduler.next_runs()
        assert set(after) == {"keep", "change", "new"}
        assert after["keep"] == before["keep"]
    finally:
        scheduler.shutdown()
    assert scheduler.next_runs() == {}


async def test_scheduler_spreads_checks_that_start_together_over_the_interval() -> None:
    scheduler, _, _ = _recorder()
    scheduler.apply({f"c{i}": 10.0 for i in range(100)}, set())
    scheduler.start()
    try:
        now = time.time()
        slices = {int(max(due - now, 0.0)) for due in scheduler.next_runs().values()}
    finally:
        scheduler.shutdown()
    assert slices == set(range(10))  # one start per 0.1 s slice: no second is left empty


@pytest.mark.parametrize(
    ("intervals", "step"),
    [
        ([1.0] * 300, 0.010),  # 300 runs a second: 3 per 10 ms step
        ([1.0] * 1000, 0.003),  # busier: narrower steps, still about 3 runs each
        ([1.0] * 10_000, 0.001),  # never under a millisecond
        ([15.0] * 10, 0.010),  # few runs: never over 10 ms
        ([1.0] * 150 + [15.0] * 2250, 0.010),  # every check's rate counts
    ],
)
def test_grid_step_aims_at_a_few_runs_per_step(intervals: list[float], step: float) -> None:
    assert grid_step(intervals) == pytest.approx(step)


async def test_scheduler_starts_runs_on_a_shared_grid_a_few_at_a_time() -> None:
    scheduler, _, _ = _recorder()
    scheduler.apply({f"c{i}": 1.0 for i in range(300)}, set())
    scheduler.apply({f"c{i}": 1.0 for i in range(300)} | {"late": 1.0}, set())
    scheduler.start()
    try:
        starts = list(scheduler.next_runs().values())
    finally:
        scheduler.shutdown()
    centi = [start * 100 for start in starts]
    assert all(abs(c - round(c)) < 1e-4 for c in centi)  # whole 10 ms steps, reload included
    per_step = Counter(round(c) for c in centi)
    assert len(per_step) >= 100  # every step of the second gets runs...
    assert max(per_step.values()) <= 5  # ...a few each: the start rate stays even


async def test_runs_due_together_start_one_per_turn_of_the_loop() -> None:
    # What a run's start queues on the loop (its connect's callbacks) runs before the next
    # run due at the same moment starts: started all at once, every run's callbacks would
    # wait for the others' start-up work, and that wait would show in its latency.
    events: list[tuple[str, str]] = []

    async def run(name: str) -> None:
        events.append(("start", name))
        asyncio.get_running_loop().call_soon(events.append, ("callback", name))

    scheduler = Scheduler(run, lambda _: None)
    scheduler.apply({f"c{i}": 1.0 for i in range(300)}, set())
    scheduler.start()
    try:
        await wait_for(lambda: sum(kind == "start" for kind, _ in events) >= 60)
    finally:
        scheduler.shutdown()
    starts = [index for index, (kind, _) in enumerate(events) if kind == "start"]
    for this, following in itertools.pairwise(starts):
        name = events[this][1]
        assert ("callback", name) in events[this:following], events[this : following + 1]


async def test_a_run_waiting_to_start_is_dropped_with_its_check() -> None:
    scheduler, ran, _ = _recorder()
    scheduler.apply({"a": 3600.0, "b": 3600.0, "c": 3600.0}, set())
    scheduler.start()
    try:
        apscheduler = scheduler._scheduler
        executor = apscheduler._executors["default"]
        for name in ("a", "b", "c"):  # due together: b and c wait for the loop's next turns
            executor.submit_job(apscheduler.get_job(name), [])
        scheduler.apply({"a": 3600.0, "c": 3600.0}, {"c"})  # b removed, c replaced
        await wait_for(lambda: "a" in ran)
        await asyncio.sleep(0.05)
        assert ran == ["a"]
        assert executor._instances == {}  # nothing counts as running: the next runs start
        executor.submit_job(apscheduler.get_job("c"), [])
        await wait_for(lambda: ran == ["a", "c"])
    finally:
        scheduler.shutdown()


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed")
def test_scheduler_under_uvloop_never_wakes_early() -> None:
    import uvloop

    async def main() -> tuple[list[str], list[float]]:
        scheduler, ran, lags = _recorder()
        scheduler.apply({"a": 0.0123, "b": 0.0071}, set())
        scheduler.start()
        try:
            await wait_for(lambda: ran.count("a") >= 5 and ran.count("b") >= 5)
        finally:
            scheduler.shutdown()
        return ran, lags

    loop = uvloop.new_event_loop()
    try:
        _, lags = loop.run_until_complete(main())
    finally:
        loop.close()
    assert min(lags) >= 0.0


class _Slow:
    """A target that answers after a while and remembers how many requests it held at once."""

    def __init__(self) -> None:
        self.inflight = 0
        self.most = 0
        self.answered = 0

    async def handle(self, _: web.Request) -> web.Response:
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.inflight -= 1
        self.answered += 1
        return web.Response(text="ok")


@pytest.fixture
async def slow_target() -> AsyncIterator[tuple[_Slow, str]]:
    slow = _Slow()
    app = web.Application()
    app.router.add_get("/", slow.handle)
    runner, url = await serve_app(app)
    yield slow, url
    await runner.cleanup()


async def test_concurrency_cap_holds_and_delayed_probes_are_counted(
    tmp_path: Path, slow_target: tuple[_Slow, str]
) -> None:
    slow, url = slow_target
    config = tmp_path / "prober.yml"
    lines = ["interval: 0.2s", "timeout: 0.15s", "max_concurrent_probes: 3", "checks:"]
    lines += [f"  - {{name: c{i}, kind: http, component: api, url: '{url}/'}}" for i in range(20)]
    config.write_text("\n".join(lines) + "\n")
    daemon = Daemon(config)
    await daemon.start()
    try:
        await wait_for(lambda: slow.answered >= 40)
        text = daemon.metrics.render().decode()
    finally:
        await daemon.stop()
    assert slow.most <= 3
    delayed = next(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "prober_probes_delayed_total"
    )
    assert delayed > 0


def _sink(count: int) -> MetricsSink:
    sink = MetricsSink()
    sink.apply(
        {f"c{i}": SeriesPlan((("component", "api"),)) for i in range(count)}, {"vantage": "test"}
    )
    for i in range(count):
        step = StepResult("request", i % 3 > 0, 0.05, facts=HttpFacts(200, Phases(0.001)))
        sink.record(Result(f"c{i}", i % 3 > 0, 0.05 + i / 1000, 1.7e9, steps=(step,)))
    return sink


def test_streamed_exposition_is_the_whole_exposition_and_parses() -> None:
    sink = _sink(50)
    pieces = list(sink.render_chunks(4096))
    assert len(pieces) > 1
    whole = b"".join(pieces)

    def steady(text: bytes) -> list[bytes]:
        # process_* (CPU seconds, memory) may move between two renders on a busy machine.
        return [line for line in text.splitlines() if not line.startswith(b"process_")]

    assert steady(whole) == steady(sink.render())
    names = {f.name for f in text_string_to_metric_families(whole.decode())}
    assert {"probe_success", "probe_duration_seconds", "prober_check_runs"} <= names


def test_exposition_is_rendered_when_a_result_is_recorded() -> None:
    sink = _sink(3)
    before = sink.render()
    step = StepResult("request", False, 0.2, facts=HttpFacts(500))
    sink.record(Result("c1", False, 0.2, 1.7e9, steps=(step,)))
    after = sink.render().decode()
    assert before != after.encode()
    assert 'probe_duration_seconds{check="c1",component="api",vantage="test"} 0.2' in after

"""Sharding: N daemons split the checks, each run exactly once, and checks stay put."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from prober.config.load import load_config
from prober.engine.daemon import Daemon
from prober.engine.shard import Shard, owned_checks, parse_shard, shard_of
from tests.support.checks import WriteConfig
from tests.support.processes import run_prober


def config_with(names: list[str]) -> str:
    # A long interval: these daemons only need to own checks, not to probe anything.
    lines = [
        f"  - {{name: {name}, kind: http, component: api, url: 'http://127.0.0.1:9/{name}'}}"
        for name in names
    ]
    return "interval: 1h\ntimeout: 5s\nchecks:\n" + "\n".join(lines) + "\n"


def owned(daemon: Daemon) -> set[str]:
    return {state.name for state in daemon.status.states()}


def configured(daemon: Daemon, scope: str) -> float:
    text = daemon.metrics.render().decode()
    for line in text.splitlines():
        if line.startswith(f'prober_checks_configured{{scope="{scope}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no prober_checks_configured{{scope={scope!r}}} in /metrics")


async def test_three_shards_cover_every_check_exactly_once_and_checks_stay_put(
    write_config: WriteConfig,
) -> None:
    names = [f"check-{i:02d}" for i in range(30)]
    path = write_config(config_with(names))
    daemons = [Daemon(path, shard=Shard(index, 3)) for index in range(3)]
    for daemon in daemons:
        await daemon.start()
    try:
        before = [owned(d) for d in daemons]
        assert sorted(n for shard in before for n in shard) == names  # each exactly once
        assert all(before), "a shard got none of 30 checks"
        for daemon, shard in zip(daemons, before, strict=True):
            assert configured(daemon, "all") == 30
            assert configured(daemon, "owned") == len(shard)

        extra = [f"unrelated-{i}" for i in range(10)]
        write_config(config_with(names + extra))
        for daemon in daemons:
            await daemon.reload()
        after = [owned(d) for d in daemons]
        assert sorted(n for shard in after for n in shard) == sorted(names + extra)
        for old, new in zip(before, after, strict=True):
            assert old <= new, "adding unrelated checks moved an existing check to another shard"
    finally:
        for daemon in daemons:
            await daemon.stop()


def test_without_a_shard_every_check_is_owned_and_shards_split_them(
    write_config: WriteConfig,
) -> None:
    names = [f"check-{i:02d}" for i in range(12)]
    checks = load_config(write_config(config_with(names))).checks
    assert list(owned_checks(checks, None)) == names
    parts = [owned_checks(checks, Shard(index, 3)) for index in range(3)]
    assert sorted(name for part in parts for name in part) == names
    assert all(part[name].name == name for part in parts for name in part)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("1/3", {}, Shard(1, 3)),
        ("auto", {"HOSTNAME": "prober-shard-2", "PROBER_SHARD_COUNT": "3"}, Shard(2, 3)),
        ("auto", {"HOSTNAME": "prober-0", "PROBER_SHARD_COUNT": "1"}, Shard(0, 1)),
        ("", {}, None),
    ],
    ids=["explicit", "statefulset-pod", "single-replica", "unset"],
)
def test_shard_flag_parses(text: str, env: Mapping[str, str], expected: Shard | None) -> None:
    assert parse_shard(text, env) == expected


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("3/3", {}, "0 <= INDEX < COUNT"),
        ("a/b", {}, "INDEX/COUNT"),
        ("auto", {"HOSTNAME": "prober", "PROBER_SHARD_COUNT": "3"}, "does not end in -N"),
        ("auto", {"HOSTNAME": "prober-1"}, "PROBER_SHARD_COUNT"),
        ("auto", {"HOSTNAME": "prober-3", "PROBER_SHARD_COUNT": "3"}, "0 <= INDEX < COUNT"),
    ],
    ids=["index-too-big", "not-numbers", "no-ordinal", "no-count", "more-pods-than-shards"],
)
def test_bad_shard_flag_is_a_clear_error(text: str, env: Mapping[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_shard(text, env)


def test_shard_auto_from_the_environment_in_the_cli(tmp_path: Path) -> None:
    run = run_prober(
        "run",
        "--config.file",
        str(tmp_path / "none.yml"),
        env={"PATH": "/usr/bin:/bin", "PROBER_SHARD": "auto", "HOSTNAME": "prober-x"},
    )
    assert run.returncode == 2
    assert "does not end in -N" in run.stderr and "Traceback" not in run.stderr


TEN_THOUSAND = [f"{part}-{i:05d}" for i in range(2_500) for part in ("api", "login", "feed", "dm")]


def test_a_ninth_shard_moves_about_a_ninth_of_the_checks_all_to_itself() -> None:
    before = {name: shard_of(name, 8) for name in TEN_THOUSAND}
    after = {name: shard_of(name, 9) for name in TEN_THOUSAND}
    moved = [name for name in TEN_THOUSAND if before[name] != after[name]]
    share = len(moved) / len(TEN_THOUSAND)
    print(f"\nadding a 9th shard to 8 moved {len(moved)} of {len(TEN_THOUSAND)} checks")
    assert share <= 0.15
    assert abs(share - 1 / 9) < 0.02
    assert {after[name] for name in moved} == {8}, "a check moved between two old shards"


@pytest.mark.parametrize("count", [1, 2, 3, 8, 9])
def test_each_check_has_exactly_one_shard(count: int) -> None:
    shards = [Shard(index, count) for index in range(count)]
    assert all(sum(s.owns(name) for s in shards) == 1 for name in TEN_THOUSAND)


@pytest.mark.parametrize("count", [2, 3, 8, 9, 64])
def test_shards_get_even_shares(count: int) -> None:
    per_shard = [0] * count
    for name in TEN_THOUSAND:
        per_shard[shard_of(name, count)] += 1
    fair = len(TEN_THOUSAND) / count
    assert all(0.7 * fair <= n <= 1.3 * fair for n in per_shard), per_shard

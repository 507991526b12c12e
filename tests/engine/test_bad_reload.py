"""Each kind of broken reload keeps the running config and its metrics, and says why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from prober.config.load import ConfigError
from prober.engine.daemon import Daemon
from tests.support.checks import WriteConfig
from tests.support.processes import wait_for
from tests.support.servers import Target

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


def break_main(directory: Path) -> str:
    (directory / "prober.yml").write_text("interval: [not, a, duration\n")
    return "invalid YAML"


def remove_main(directory: Path) -> str:
    (directory / "prober.yml").unlink()
    return "cannot read file"


def duplicate_name(directory: Path) -> str:
    (directory / "checks" / "again.yml").write_text(CHECK)
    return "also used in"


def unreadable_secret(directory: Path) -> str:
    # A directory where the file was: unreadable even for root, unlike chmod 000.
    (directory / "token.txt").unlink()
    (directory / "token.txt").mkdir()
    return "cannot read secret file"


BREAKAGES: dict[str, Callable[[Path], str]] = {
    "broken-file": break_main,
    "missing-file": remove_main,
    "duplicate-check-name": duplicate_name,
    "unreadable-secret-file": unreadable_secret,
}


@pytest.mark.parametrize("breakage", list(BREAKAGES.values()), ids=list(BREAKAGES))
async def test_broken_reload_keeps_running_config(
    breakage: Callable[[Path], str],
    target: Target,
    write_config: WriteConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("URL", target.url)
    (tmp_path / "token.txt").write_text("t0ken-value\n")
    daemon = Daemon(write_config(MAIN, steady=CHECK))
    await daemon.start()
    try:
        await wait_for(lambda: target.hits >= 2)
        expected = breakage(tmp_path)
        with pytest.raises(ConfigError) as caught:
            await daemon.reload()
        assert expected in str(caught.value)
        hits = target.hits
        await wait_for(lambda: target.hits >= hits + 3)
        text = daemon.metrics.render().decode()
        assert "prober_config_last_reload_successful 0.0" in text
        assert 'probe_success{check="steady",component="api"} 1.0' in text
    finally:
        await daemon.stop()

"""The example checks under checks/examples/ stay valid, and cover every protocol kind."""

from __future__ import annotations

from prober.config.load import load_config
from tests.support.processes import REPO, run_prober

EXAMPLES = REPO / "checks" / "examples" / "prober.yml"


def test_examples_validate_with_the_cli() -> None:
    run = run_prober("validate", "--config.file", str(EXAMPLES))
    assert run.returncode == 0, run.stderr
    assert "OK" in run.stdout


def test_examples_cover_every_protocol_kind_https_and_ipv6() -> None:
    checks = load_config(EXAMPLES).checks
    kinds = {c.kind for c in checks}
    assert {"http", "tcp", "dns", "grpc", "websocket"} <= kinds
    assert any(getattr(c, "ip_protocol", "either") == "ip6" for c in checks)
    assert any(getattr(c, "use_tls", False) for c in checks)


def test_examples_are_not_loaded_by_the_default_config() -> None:
    names = {c.name for c in load_config(REPO / "prober.yml").checks}
    assert not names & {c.name for c in load_config(EXAMPLES).checks}

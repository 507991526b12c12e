"""`prober probe` names the request path each HTTP step took, and only there."""

from __future__ import annotations

from typing import Any

import pytest

from prober.cli.trace import format_result, request_paths
from prober.config.model import FlowCheck
from prober.result import HttpFacts, Result, StepResult
from tests.support.checks import http_check


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({}, "lean"),
        ({"url": "https://api.example.test/health"}, "lean"),
        ({"keep_alive": True}, "aiohttp"),
        ({"proxy_url": "http://proxy.example.test:3128"}, "aiohttp"),
    ],
    ids=["plain", "tls", "keep-alive", "proxy"],
)
def test_http_checks_take_the_lean_path_unless_it_cannot_serve_them(
    settings: dict[str, Any], path: str
) -> None:
    settings = {"url": "http://127.0.0.1:8080/ok", **settings}
    check = http_check(settings.pop("url"), **settings)
    assert request_paths(check) == {"request": path}


def test_each_flow_step_has_its_own_path() -> None:
    check = FlowCheck.model_validate(
        {
            "name": "f",
            "kind": "flow",
            "component": "api",
            "steps": [
                {"name": "login", "url": "http://127.0.0.1/login"},
                {"name": "feed", "url": "http://127.0.0.1/feed", "keep_alive": True},
            ],
        }
    )
    assert request_paths(check) == {"login": "lean", "feed": "aiohttp"}


def test_the_trace_shows_the_path_of_each_step() -> None:
    step = StepResult("request", True, 0.01, facts=HttpFacts(status_code=200))
    result = Result("t", True, 0.01, 0.0, steps=(step,))
    assert "  path: lean" in format_result(result, {"request": "lean"}).splitlines()
    assert "path:" not in format_result(result)

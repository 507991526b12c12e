"""Fixtures of the deploy tests: the Prometheus tools they run."""

from __future__ import annotations

import pytest

from tests.support.deploy import find_tool


@pytest.fixture
def promtool() -> str:
    return find_tool("promtool")


@pytest.fixture
def amtool() -> str:
    return find_tool("amtool")

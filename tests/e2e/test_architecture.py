"""The package's shape as docs/ARCHITECTURE.md tells it: parts as folders, small modules,
each one named in the doc, and tests that share fixtures only through conftest."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "prober"
ARCHITECTURE = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
MAX_LINES = 450
MAX_TOP_LEVEL_MODULES = 6


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_few_modules_sit_directly_in_the_package() -> None:
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_no_module_is_over_the_line_budget() -> None:
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines()) for p in modules()
    }
    long = {path: lines for path, lines in sizes.items() if lines > MAX_LINES}
    assert not long, long


def test_every_module_is_named_in_the_architecture_doc() -> None:
    named = set(re.findall(r"`(?:prober/)?([a-z0-9_/]+\.py)`", ARCHITECTURE))
    folder_rows = re.findall(r"^\| `([a-z0-9_/]+/)` \| (.*)$", ARCHITECTURE, re.MULTILINE)
    missing = []
    for path in modules():
        relative = str(path.relative_to(PACKAGE))
        if path.name == "__init__.py" or relative in named:
            continue
        in_folder_row = any(
            relative.startswith(folder) and f"`{path.name}`" in text for folder, text in folder_rows
        )
        if not in_folder_row:
            missing.append(relative)
    assert not missing, f"docs/ARCHITECTURE.md does not name: {missing}"


def test_tests_share_helpers_through_support_not_conftest() -> None:
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "tests").rglob("*.py")
        if re.search(r"^\s*from tests\.(conftest|test_\w+) import", p.read_text(), re.MULTILINE)
    ]
    assert not offenders, offenders

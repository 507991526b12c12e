"""Packaging: the license as SPDX, a bounded build backend, a lock with hashes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import setuptools
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "deploy" / "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)")


def pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def locked() -> dict[str, tuple[Version, int]]:
    """Each pinned name (normalised) -> (version, number of hashes)."""
    pins: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in LOCK.read_text().splitlines():
        pin = _PIN.match(line)
        if pin:
            name = pin.group(1).lower().replace("_", "-").replace(".", "-")
            pins[name] = (Version(pin.group(2)), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
    return pins


def test_license_is_an_spdx_expression_with_its_text() -> None:
    project = pyproject()["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n")
    assert "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pins = locked()
    assert pins
    for name, (_, hashes) in pins.items():
        assert hashes >= 1, f"{name} has no hash"
    for text in pyproject()["project"]["dependencies"]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in {LOCK.name}: regenerate it (docs/RUNBOOK.md)"
        assert pins[name][0] in requirement.specifier, f"{name}=={pins[name][0]} vs {text}"
    assert "--index-url" not in LOCK.read_text().replace("--index-url=https://pypi.org", "")


def test_wheel_builds_without_warnings_and_carries_the_license(tmp_path: Path) -> None:
    (requirement,) = pyproject()["build-system"]["requires"]
    bounds = Requirement(requirement)
    assert bounds.name == "setuptools"
    assert "76.1.0" not in bounds.specifier and "99.0.0" not in bounds.specifier  # bounded
    # The installed backend is within the bounds (the test extra pins the same range).
    assert Version(setuptools.__version__) in bounds.specifier
    # Built from a copy of what the Dockerfile copies, so the checkout gets no build/ tree.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "prober", source / "prober", ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
         "--wheel-dir", str(wheels), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = build.stdout + build.stderr
    assert build.returncode == 0, output
    assert "Deprecat" not in output and "SetuptoolsWarning" not in output, output
    (wheel,) = wheels.glob("prober-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = archive.read(metadata).decode().split("\n\n", 1)[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers
    assert "License-File: LICENSE" in headers
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

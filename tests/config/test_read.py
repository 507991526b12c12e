"""Reading input: bounded regular files, YAML with the line of every key, shapes refused
before anything is built from them."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from prober.config.located import ConfigError
from prober.config.read import MAX_DEPTH, parse_document, read_bounded, read_document


def _issue(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_document(text, "in.yml")
    (issue,) = caught.value.issues
    return str(issue)


def test_every_key_has_its_line_and_a_key_wins_over_its_block_value() -> None:
    doc = parse_document("interval: 10s\nlabels:\n  team: core\nchecks:\n  - name: a\n", "in.yml")
    assert doc.lines[("interval",)] == 1
    assert doc.lines[("labels",)] == 2
    assert doc.lines[("labels", "team")] == 3
    assert doc.lines[("checks", 0, "name")] == 5
    assert doc.line_of(("labels", "team", "missing")) == 3


def test_crlf_and_cr_files_read_like_lf(tmp_path: Path) -> None:
    path = tmp_path / "prober.yml"
    path.write_bytes(b"interval: 10s\r\nlabels:\r  team: core\r\n")
    doc = read_document(path)
    assert doc.data == {"interval": "10s", "labels": {"team": "core"}}
    assert doc.lines[("labels", "team")] == 3


def test_an_empty_file_is_an_empty_mapping() -> None:
    assert parse_document("", "in.yml").data == {}


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "prober.yml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError) as caught:
        read_document(path)
    assert str(caught.value) == f"{path}:1: the file must hold a mapping (key: value)"


def test_invalid_yaml_is_located() -> None:
    # The problem's wording is libyaml's or PyYAML's, whichever parses.
    assert _issue("a: 1\nb: [\n").startswith("in.yml:3: invalid YAML: ")


def test_nesting_deeper_than_the_limit_is_refused_with_its_line() -> None:
    text = "a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n"
    assert _issue(text) == f"in.yml:1: invalid YAML: nested deeper than {MAX_DEPTH} levels"


def test_aliases_that_multiply_a_document_are_refused_before_it_is_built() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    assert "aliases expand it by over" in _issue("\n".join(lines) + "\n")


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    assert "an alias refers to a node that contains it" in _issue("a: &a [*a]\n")


def test_a_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    path.write_bytes(b"x" * (2 << 20))
    with pytest.raises(OSError) as caught:
        read_bounded(path, 1 << 20)
    assert caught.value.errno == errno.EFBIG
    assert read_bounded(path, 2 << 20) == b"x" * (2 << 20)


def test_unreadable_and_non_utf8_files_say_why_without_their_content(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yml"
    with pytest.raises(ConfigError) as caught:
        read_document(missing)
    assert str(caught.value) == f"{missing}: cannot read file: No such file or directory"
    latin1 = tmp_path / "latin1.yml"
    latin1.write_bytes(b"label: caf\xe9-secret\n")
    with pytest.raises(ConfigError) as caught:
        read_document(latin1)
    assert str(caught.value) == f"{latin1}: cannot read file: not UTF-8 text"

"""`${VAR}` substitution at load: everywhere but the request fields, which render per run."""

from __future__ import annotations

from prober.config.located import ConfigIssue
from prober.config.read import parse_document
from prober.config.substitute import substitute

TEXT = """\
labels: {region: "${REGION}", tier: "${TIER:-gold}"}
checks:
  - name: a
    url: "${BASE}/x"
    headers: {Authorization: "Bearer ${TOKEN}"}
    steps:
      - {name: s, json: {k: "${TOKEN}"}, body: "${TOKEN}"}
  - {name: t, kind: tcp, target: "h:1", send: ["AUTH ${TCP_KEY}"]}
"""


def test_values_fill_in_at_load_and_request_fields_stay_templates() -> None:
    doc = parse_document(TEXT, "in.yml")
    issues: list[ConfigIssue] = []
    env = {"REGION": "eu", "BASE": "http://h", "TOKEN": "tok-1", "TCP_KEY": "key-99"}
    substitute(doc, env, issues)
    assert issues == []
    assert doc.data["labels"] == {"region": "eu", "tier": "gold"}
    check, tcp = doc.data["checks"]
    assert check["url"] == "${BASE}/x"
    assert check["headers"] == {"Authorization": "Bearer ${TOKEN}"}
    assert check["steps"][0]["json"] == {"k": "${TOKEN}"}
    assert tcp["send"] == ["AUTH key-99"]
    assert doc.substituted == {"eu", "key-99"}
    assert doc.sent == {"key-99"}


def test_an_unset_variable_is_located() -> None:
    doc = parse_document('labels:\n  a: "${SECRETISH}"\n  b: "${MISSING}"\n', "in.yml")
    issues: list[ConfigIssue] = []
    substitute(doc, {"SECRETISH": "hush-hush-1"}, issues)
    assert [str(issue) for issue in issues] == [
        "in.yml:3: labels.b: environment variable 'MISSING' has no value"
    ]

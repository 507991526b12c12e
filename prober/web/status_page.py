"""The human status page: one self-contained HTML document, no external assets.

Failing checks come first; each row shows since when it fails, its uptime over 24 h and 7 d
(from the daemon's own hourly counts), a response-time sparkline of its recent runs, and one
dot per run whose tooltip says when it ran, how it ended and how long it took.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from prober.sinks.verdict import CheckCondition, Condition, VerdictState

# Keyed by every state a verdict, a component or a check can be in (StrEnums: the
# snapshot's plain strings find them).
_COLOURS: dict[str, str] = {
    VerdictState.OK: "#1a7f37",
    VerdictState.DEGRADED: "#9a6700",
    VerdictState.PARTIAL: "#bc4c00",
    Condition.DOWN: "#cf222e",
    CheckCondition.FAILING: "#cf222e",
    VerdictState.PENDING: "#6e7781",
    VerdictState.COMPONENT_DOWN: "#cf222e",
    VerdictState.PLATFORM_WIDE: "#a40e26",
    VerdictState.PROBER_IMPAIRED: "#8250df",
}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2328;background:#f6f8fa}
h1{margin:0 0 .2rem}.meta{color:#57606a;margin:0 0 .8rem}
.verdict{font-size:1.6rem;color:#fff;padding:.8rem 1rem;border-radius:8px}
.grid{display:flex;flex-wrap:wrap;gap:.6rem;margin:1rem 0}
.comp{background:#fff;border-radius:8px;padding:.6rem 1rem;border-left:8px solid}
table{border-collapse:collapse;background:#fff;width:100%}
td,th{padding:.3rem .6rem;border-bottom:1px solid #d0d7de;text-align:left;font-size:.9rem;
vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.dot{display:inline-block;width:.55rem;height:.8rem;margin-right:1px;border-radius:2px}
.spark polyline{fill:none;stroke:#0969da;stroke-width:1.5}.spark circle{fill:#cf222e}
small{color:#57606a}
"""
_SPARK_WIDTH = 120
_SPARK_HEIGHT = 24
# Rows in this order: failing, then degraded, then anything not yet known, then ok.
_FAILING_RANK, _DEGRADED_RANK, _OTHER_RANK, _OK_RANK = range(4)


def _colour(state: str) -> str:
    return _COLOURS.get(state, "#6e7781")


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    return f"{_span(max(time.time() - ts, 0))} ago"


def _span(seconds: float) -> str:
    """A duration as a person reads it: 45s, 12m, 3h 5m, 2d 4h."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _rank(check: dict[str, Any]) -> int:
    """Where a check's row goes: failing first, ok last."""
    if check["state"] in (CheckCondition.FAILING, Condition.DOWN):
        return _FAILING_RANK
    if check["state"] == CheckCondition.OK:
        return _DEGRADED_RANK if check["degraded"] else _OK_RANK
    return _OTHER_RANK


def _dots(runs: list[dict[str, Any]]) -> str:
    """One dot per recent run; the tooltip says when, how it ended and how long it took."""
    dots = []
    for run in runs:
        outcome = "ok" if run["ok"] else f"failed: {run['reason'] or 'error'}"
        title = f"{_clock(run['at'])} · {outcome} · {_ms(run['seconds'])}"
        colour = _colour(CheckCondition.of(run["ok"]))
        dots.append(
            f'<span class="dot" title="{escape(title)}" style="background:{colour}"></span>'
        )
    return "".join(dots)


def _sparkline(runs: list[dict[str, Any]]) -> str:
    """Response time of the recent runs as an inline SVG line; failed runs marked red."""
    if not runs:
        return ""
    times = [float(run["seconds"]) for run in runs]
    top = max(times) or 1.0
    # A 3-pixel margin keeps the marks of the first and last runs inside the picture.
    step = (_SPARK_WIDTH - 6) / max(len(times) - 1, 1)
    points = [
        (round(3 + i * step, 1), round(_SPARK_HEIGHT - 3 - (t / top) * (_SPARK_HEIGHT - 6), 1))
        for i, t in enumerate(times)
    ]
    line = " ".join(f"{x},{y}" for x, y in points)
    marks = "".join(
        f'<circle cx="{x}" cy="{y}" r="2"></circle>'
        for (x, y), run in zip(points, runs, strict=True)
        if not run["ok"]
    )
    summary = (
        f"response time of the last {len(times)} runs: latest {_ms(times[-1])}, "
        f"min {_ms(min(times))}, max {_ms(top)}"
    )
    return (
        f'<svg class="spark" width="{_SPARK_WIDTH}" height="{_SPARK_HEIGHT}" role="img" '
        f'aria-label="{summary}"><title>{summary}</title>'
        f'<polyline points="{line}"></polyline>{marks}</svg>'
        f"<br><small>{_ms(times[-1])}</small>"
    )


def _uptime(share: float | None, window: str) -> str:
    """Uptime as a percentage cell, coloured by how many nines it has."""
    if share is None:
        return f'<td class="num" title="no runs in the last {window}">&ndash;</td>'
    percent = share * 100
    text = "100%" if share == 1 else f"{min(percent, 99.99):.2f}%"
    colour = _colour(_uptime_state(percent))
    return f'<td class="num" style="color:{colour}" title="runs passed, last {window}">{text}</td>'


def _uptime_state(percent: float) -> str:
    """Ok from three nines, degraded from two, failing below."""
    if percent >= 99.9:
        return CheckCondition.OK
    return Condition.DEGRADED if percent >= 99 else CheckCondition.FAILING


def _disagrees(check: dict[str, Any]) -> bool:
    """The last run said otherwise than the confirmed state, and a re-run will settle it."""
    last_ok = check.get("last_run_ok")
    state = check["state"]
    known = state in (CheckCondition.OK, CheckCondition.FAILING)
    return bool(check.get("confirming")) and known and last_ok is not (state == CheckCondition.OK)


def _state_cell(check: dict[str, Any]) -> str:
    slow = check["state"] == CheckCondition.OK and check["degraded"]
    state = Condition.DEGRADED if slow else check["state"]
    since = ""
    if check.get("failing_since"):
        started = check["failing_since"]
        since = (
            f'<br><small class="since" title="{_clock(started)}">failing since '
            f"{time.strftime('%H:%M:%S UTC', time.gmtime(started))} "
            f"({_span(time.time() - started)})</small>"
        )
    if _disagrees(check):
        since += (
            '<br><small class="confirming" title="the last run disagreed with the confirmed '
            'state: the check is run again at once to confirm it">confirming</small>'
        )
    return f'<td style="color:{_colour(state)}"><b>{escape(state)}</b>{since}</td>'


def _check_row(check: dict[str, Any]) -> str:
    detail = escape(check["reason"] or "")
    if check["failed_step"]:
        detail += f" at step {escape(check['failed_step'])}"
    runs = check.get("recent_runs", [])
    return (
        f'<tr data-check="{escape(check["name"])}" data-state="{escape(check["state"])}">'
        f"<td>{escape(check['name'])}</td><td>{escape(check['component'])}</td>"
        f"{_state_cell(check)}"
        f"<td>{detail}<br><small>{escape(check['message'])}</small></td>"
        f"{_uptime(check.get('uptime_24h'), '24 h')}{_uptime(check.get('uptime_7d'), '7 days')}"
        f"<td>{_sparkline(runs)}</td>"
        f"<td>{_ago(check['last_success'])}</td><td>{_dots(runs)}</td></tr>"
    )


def _component(component: dict[str, Any]) -> str:
    """A component's box: its state (pending while held for a canary), how many of its
    checks fail, and the failing share of accounts when a pooled flow samples it."""
    state = escape(component["state"])
    share = component.get("failing_share")
    accounts = (
        f'<br><small class="share" title="accounts failing over recent pooled runs">'
        f"{share * 100:.0f}% of accounts failing</small>"
        if share is not None
        else ""
    )
    return (
        f'<div class="comp" style="border-color:{_colour(state)}" '
        f'data-component="{escape(component["name"])}" data-state="{state}">'
        f"<b>{escape(component['name'])}</b><br>{state} "
        f"<small>({component['failing']}/{component['checks']} failing)</small>{accounts}</div>"
    )


def _meta(snapshot: dict[str, Any]) -> str:
    """The line under the title: which vantage point this is, the global labels, and how
    far the trouble reaches (the verdict's scope)."""
    labels = snapshot.get("labels", {})
    parts = [f"vantage <b>{escape(labels['vantage'])}</b>"] if "vantage" in labels else []
    parts += [f"{escape(k)}={escape(v)}" for k, v in sorted(labels.items()) if k != "vantage"]
    if "scope" in snapshot:
        scope = escape(snapshot["scope"])
        parts.append(f'scope <b data-scope="{scope}">{scope}</b>')
    if snapshot.get("evaluated_at"):
        parts.append(f"verdict {_ago(snapshot['evaluated_at'])}")
    return f'<p class="meta" id="meta">{" · ".join(parts)}</p>'


def render_status_page(snapshot: dict[str, Any], refresh_seconds: int = 5) -> str:
    """The verdict first, then each component, then every check, failing ones first.

    Always encodable as UTF-8: a lone surrogate (bytes that were not UTF-8, decoded with
    surrogateescape somewhere upstream) becomes `?` instead of failing the page.
    """
    page = _render(snapshot, refresh_seconds)
    return page.encode("utf-8", "replace").decode("utf-8")


def _render(snapshot: dict[str, Any], refresh_seconds: int) -> str:
    verdict = snapshot["verdict"]
    components = "".join(_component(c) for c in snapshot["components"])
    checks = sorted(snapshot["checks"], key=lambda c: (_rank(c), c["name"]))
    rows = "".join(_check_row(c) for c in checks)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh_seconds}">
<title>prober: {escape(verdict)}</title><style>{_STYLE}</style></head>
<body><h1>prober status</h1>{_meta(snapshot)}
<div class="verdict" id="verdict" data-verdict="{escape(verdict)}"
 style="background:{_colour(verdict)}">{escape(snapshot["summary"])}</div>
<div class="grid" id="components">{components}</div>
<table id="checks"><thead><tr><th>check</th><th>component</th><th>state</th><th>why</th>
<th>uptime 24&nbsp;h</th><th>uptime 7&nbsp;d</th><th>response time</th><th>last success</th>
<th>recent runs</th></tr></thead><tbody>{rows}</tbody></table>
<p><small>Refreshes every {refresh_seconds}s. Uptime: the share of runs that passed since
the daemon started, over the current hour and the 23 (24 h) or 167 (7 d) before it. Hover a
dot for its run. <a href="/api/status">JSON</a> · <a href="/metrics">metrics</a></small></p>
</body></html>
"""

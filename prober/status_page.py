"""The human status page: one self-contained HTML document, no external assets."""

from __future__ import annotations

import time
from html import escape
from typing import Any

_COLOURS = {
    "ok": "#1a7f37",
    "degraded": "#9a6700",
    "down": "#cf222e",
    "failing": "#cf222e",
    "pending": "#6e7781",
    "component_down": "#cf222e",
    "platform_wide": "#a40e26",
    "prober_impaired": "#8250df",
}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2328;background:#f6f8fa}
h1{margin:0 0 .5rem}.verdict{font-size:1.6rem;color:#fff;padding:.8rem 1rem;border-radius:8px}
.grid{display:flex;flex-wrap:wrap;gap:.6rem;margin:1rem 0}
.comp{background:#fff;border-radius:8px;padding:.6rem 1rem;border-left:8px solid}
table{border-collapse:collapse;background:#fff;width:100%}
td,th{padding:.3rem .6rem;border-bottom:1px solid #d0d7de;text-align:left;font-size:.9rem}
.dot{display:inline-block;width:.55rem;height:.8rem;margin-right:1px;border-radius:2px}
small{color:#57606a}
"""


def _colour(state: str) -> str:
    return _COLOURS.get(state, "#6e7781")


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    return f"{max(time.time() - ts, 0):.0f}s ago"


def _check_row(check: dict[str, Any]) -> str:
    history = "".join(
        f'<span class="dot" style="background:{_colour("ok" if ok else "failing")}"></span>'
        for ok in check["history"]
    )
    detail = escape(check["reason"] or "")
    if check["failed_step"]:
        detail += f" at step {escape(check['failed_step'])}"
    return (
        f"<tr><td>{escape(check['name'])}</td><td>{escape(check['component'])}</td>"
        f'<td style="color:{_colour(check["state"])}"><b>{check["state"]}</b></td>'
        f"<td>{detail}<br><small>{escape(check['message'])}</small></td>"
        f"<td>{_ago(check['last_success'])}</td><td>{history}</td></tr>"
    )


def render_status_page(snapshot: dict[str, Any], refresh_seconds: int = 5) -> str:
    """The verdict first, then each component, then every check with its recent history.

    Always encodable as UTF-8: a lone surrogate (bytes that were not UTF-8, decoded with
    surrogateescape somewhere upstream) becomes `?` instead of failing the page.
    """
    page = _render(snapshot, refresh_seconds)
    return page.encode("utf-8", "replace").decode("utf-8")


def _render(snapshot: dict[str, Any], refresh_seconds: int) -> str:
    verdict = snapshot["verdict"]
    components = "".join(
        f'<div class="comp" style="border-color:{_colour(c["state"])}" '
        f'data-component="{escape(c["name"])}" data-state="{c["state"]}">'
        f"<b>{escape(c['name'])}</b><br>{c['state']} "
        f"<small>({c['failing']}/{c['checks']} failing)</small></div>"
        for c in snapshot["components"]
    )
    rows = "".join(_check_row(c) for c in snapshot["checks"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh_seconds}">
<title>prober: {escape(verdict)}</title><style>{_STYLE}</style></head>
<body><h1>prober status</h1>
<div class="verdict" id="verdict" data-verdict="{escape(verdict)}"
 style="background:{_colour(verdict)}">{escape(snapshot["summary"])}</div>
<div class="grid" id="components">{components}</div>
<table><thead><tr><th>check</th><th>component</th><th>state</th><th>why</th>
<th>last success</th><th>recent runs</th></tr></thead><tbody>{rows}</tbody></table>
<p><small>Refreshes every {refresh_seconds}s. <a href="/api/status">JSON</a> ·
<a href="/metrics">metrics</a></small></p></body></html>
"""

"""The compliance report as terminal text or as one self-contained HTML page.

Every value in a report can come from someone else (a secret's owner, a principal's name,
an audit problem quoting an entry): the text form escapes control characters
(:func:`custody.textsafe.printable`), and the HTML form escapes every interpolated value
and key with :func:`html.escape` (quotes included). The page loads nothing and runs no
script; its Content-Security-Policy says so to a browser.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from custody.textsafe import printable

_STATUS = {"ok": "OK", "findings": "FINDINGS", "not-available": "NOT AVAILABLE"}


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def _headline(s: Mapping[str, Any]) -> str:
    sid = s["id"]
    if s["status"] == "not-available":
        return ""
    if sid == "checkpoint" and s.get("last"):
        last = s["last"]
        pin = "pinned" if s["pinned"] else "not pinned (no --trust)"
        return (
            f"newest checkpoint at {last['tree_size']} of {s['entries']} entries, "
            f"{last['age_seconds']} s old, {pin}; log verifies: {_fmt(s['log_verifies'])}"
        )
    if sid == "checkpoint":
        return (
            f"no usable checkpoint; {s['entries']} entries; log verifies: {_fmt(s['log_verifies'])}"
        )
    if sid == "grants":
        return f"{len(s['items'])} of {s['live']} live grants"
    if sid == "alerts":
        return f"{len(s['items'])} open; {s['unscanned_entries']} entries not yet scanned"
    if sid == "mfa":
        return f"{len(s['items'])} of {s['principals']} current principals without MFA"
    if sid == "drills":
        return f"{len(s['items'])} of {s['custodians']} custodians, epoch {s['epoch']}"
    return f"{len(s['items'])} finding(s)"


def to_text(report: Mapping[str, Any]) -> str:
    """The report for a terminal (control characters escaped)."""
    out = [
        f"Compliance report for {printable(report['deployment_id'])} at {report['at']}",
        f"(from {printable(report['source'])}, collected {report['collected_at']}): "
        f"{report['findings']} finding(s)",
    ]
    for s in report["sections"]:
        out.append("")
        out.append(f"[{_STATUS[s['status']]}] {s['title']}")
        head = _headline(s)
        if head:
            out.append(f"  {printable(head)}")
        if s["status"] == "not-available":
            out.append(f"  {printable(s['reason'])}")
        for item in s["items"]:
            out.append("  - " + printable("  ".join(f"{k}: {_fmt(v)}" for k, v in item.items())))
    return "\n".join(out) + "\n"


def _e(v: Any) -> str:
    return html.escape(_fmt(v), quote=True)


def to_html(report: Mapping[str, Any]) -> str:
    """One self-contained HTML page; every value escaped."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        f"<title>Compliance report {_e(report['deployment_id'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:.2em .5em;text-align:left}"
        ".ok{color:#060}.findings{color:#a00}.not-available{color:#666}</style>",
        "</head><body>",
        f"<h1>Compliance report: {_e(report['deployment_id'])}</h1>",
        f"<p>At {_e(report['at'])}, from {_e(report['source'])} (collected "
        f"{_e(report['collected_at'])}): <strong>{_e(report['findings'])} finding(s)"
        "</strong>.</p>",
    ]
    for s in report["sections"]:
        cls = html.escape(str(s["status"]), quote=True)
        parts.append(
            f'<h2 class="{cls}">{_e(s["title"])}: {_e(_STATUS.get(s["status"], s["status"]))}</h2>'
        )
        head = _headline(s)
        if head:
            parts.append(f"<p>{_e(head)}</p>")
        if s["status"] == "not-available":
            parts.append(f"<p>{_e(s['reason'])}</p>")
        items = s["items"]
        if items:
            cols: list[str] = []
            for item in items:
                cols.extend(k for k in item if k not in cols)
            parts.append("<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>")
            for item in items:
                parts.append(
                    "<tr>" + "".join(f"<td>{_e(item.get(c))}</td>" for c in cols) + "</tr>"
                )
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

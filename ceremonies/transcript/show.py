"""A readable timeline of a transcript: steps, actors, approvals, exceptions, checkpoints.

:func:`timeline` turns a bundle into rows; :func:`render_text` and :func:`render_html`
print them. Every string from the bundle is passed through
:func:`custody.textsafe.printable` (no control character or escape sequence reaches the
terminal), and a verification report comes last, ending with its verdict line. The HTML is
one self-contained file (inline CSS, no scripts, every value escaped) that an auditor can
archive next to the bundle.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from custody.textsafe import printable

from .bundle import BundleData
from .checks import parse
from .model import KIND_CLOSE, KIND_EXCEPTION, KIND_OPEN
from .verify import Report


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    seq: int | None
    time: str
    step: str
    kind: str
    actor: str
    signers: str
    summary: str
    tag: str  # open / close / action / exception / checkpoint / event / broken


def _ts(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _summary(kind: str, body: dict[str, Any]) -> str:
    if "approvals" in body:
        who = ", ".join(str(a.get("approver")) for a in body["approvals"] if isinstance(a, dict))
        rest = {
            k: v
            for k, v in body.items()
            if k not in ("approvals", "action_id", "params", "action_digest")
        }
        extra = "; " + _summary("", rest) if rest else ""
        return (
            f"{body.get('action_id')}: approved by {who or 'nobody'}; "
            f"params {body.get('params')}{extra}"
        )
    if kind == KIND_EXCEPTION:
        return f"resume at {body.get('resume_at')}: {body.get('reason')}"
    parts = []
    for k, v in body.items():
        if k == "artifacts" and isinstance(v, list):
            names = ", ".join(str(a.get("name")) for a in v if isinstance(a, dict))
            parts.append("artifacts " + names)
        else:
            parts.append(f"{k}={v}")
    s = "; ".join(parts)
    return s if len(s) <= 160 else s[:157] + "..."


def timeline(data: BundleData) -> tuple[dict[str, Any], list[Row]]:
    """Header facts and timeline rows of a bundle (never raises on a damaged bundle)."""
    p = parse(data)
    head: dict[str, Any] = {}
    if p.signed is not None:
        pol = p.signed.policy
        head = {
            "ceremony": pol.ceremony_id,
            "kind": pol.kind,
            "purpose": pol.purpose,
            "created": _ts(pol.created_at),
            "roster": [f"{e.name} ({e.role}, {e.fingerprint[:16]})" for e in pol.roster],
            "thresholds": {k: f"{t.count} {t.role}" for k, t in pol.thresholds.items()},
            "script": list(pol.script),
        }
    rows: list[Row] = []
    cps = {cp.tree_size: cp for cp in p.checkpoints}
    for i, ev in enumerate(p.events):
        if ev is None:
            rows.append(
                Row(
                    seq=i,
                    time="?",
                    step="?",
                    kind="?",
                    actor="?",
                    signers="",
                    summary="unreadable line",
                    tag="broken",
                )
            )
        else:
            tag = {KIND_OPEN: "open", KIND_CLOSE: "close", KIND_EXCEPTION: "exception"}.get(
                ev.kind, "action" if "approvals" in ev.body else "event"
            )
            rows.append(
                Row(
                    seq=ev.seq,
                    time=_ts(ev.time),
                    step=ev.step,
                    kind=ev.kind,
                    actor=ev.actor,
                    signers=", ".join(s.signer for s in ev.signatures),
                    summary=_summary(ev.kind, dict(ev.body)),
                    tag=tag,
                )
            )
        cp = cps.get(i + 1)
        if cp is not None:
            rows.append(
                Row(
                    seq=None,
                    time=_ts(cp.time),
                    step="",
                    kind="checkpoint",
                    actor="",
                    signers=", ".join(s.signer for s in cp.signatures),
                    summary=f"{'final ' if cp.final else ''}tree size {cp.tree_size}, "
                    f"root {cp.root.hex()[:16]}...",
                    tag="checkpoint",
                )
            )
    return head, rows


def render_text(data: BundleData, report: Report | None = None) -> str:
    """The timeline as text, every bundle string escaped; the report's verdict is last."""
    e = printable
    head, rows = timeline(data)
    out = [
        f"ceremony {e(head.get('ceremony', '?'))}  {e(head.get('kind', ''))}: "
        f"{e(head.get('purpose', ''))}"
    ]
    if head:
        out.append(f"created {head['created']}; script: {e(' > '.join(head['script']))}")
        out.append("roster: " + e("; ".join(head["roster"])))
        out.append("thresholds: " + e(", ".join(f"{k} {v}" for k, v in head["thresholds"].items())))
    out.append("")
    for r in rows:
        seq = f"{r.seq:>4}" if r.seq is not None else "   -"
        mark = {"exception": "!", "action": "*", "checkpoint": "#", "broken": "X"}.get(r.tag, " ")
        out.append(
            f"{seq} {mark} {r.time}  {e(r.step):<16} {e(r.kind):<18} {e(r.actor):<8} {e(r.summary)}"
        )
        if r.signers and r.tag in ("action", "exception", "checkpoint", "close"):
            out.append(f"{'':>26}signed by {e(r.signers)}")
    if report is not None:
        out += ["", report.text()]
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#111}
table{border-collapse:collapse;width:100%;font-size:14px}
td,th{border-bottom:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top}
tr.exception{background:#fff3cd}tr.action{background:#e7f1ff}tr.checkpoint{color:#555}
tr.broken{background:#f8d7da}.ok{color:#0a0}.fail{color:#b00}code{font-size:12px}"""


def _head_value(v: Any) -> str:
    return v if isinstance(v, str) else ", ".join(v) if isinstance(v, list) else str(v)


def render_html(data: BundleData, report: Report | None = None) -> str:
    """A self-contained HTML page (all values escaped, control characters made visible)."""

    def e(s: str) -> str:
        return html.escape(printable(s))

    head, rows = timeline(data)
    parts = [
        '<!DOCTYPE html><html><head><meta charset="utf-8">',
        f"<title>Ceremony {e(str(head.get('ceremony', '?')))}</title><style>{_CSS}</style>",
        "</head><body>",
        f"<h1>Ceremony transcript: {e(str(head.get('kind', '?')))}</h1>",
    ]
    if head:
        parts.append(
            "<dl>"
            + "".join(f"<dt>{e(k)}</dt><dd>{e(_head_value(v))}</dd>" for k, v in head.items())
            + "</dl>"
        )
    if report is not None:
        parts.append(
            "<h2>Verification</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>"
        )
        for c in report.results:
            cls = "ok" if c.ok else "fail"
            detail = "<br>".join(e(x) for x in (c.notes if c.ok else c.problems))
            parts.append(
                f'<tr><td>{e(c.id)}</td><td class="{cls}">{"PASS" if c.ok else "FAIL"}'
                f"</td><td>{detail}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        "<h2>Timeline</h2><table><tr><th>seq</th><th>time</th><th>step</th><th>kind</th>"
        "<th>actor</th><th>signed by</th><th>details</th></tr>"
    )
    for r in rows:
        cells = [
            "" if r.seq is None else str(r.seq),
            r.time,
            r.step,
            r.kind,
            r.actor,
            r.signers,
            r.summary,
        ]
        tds = "".join(f"<td>{e(c)}</td>" for c in cells)
        parts.append(f'<tr class="{e(r.tag)}">' + tds + "</tr>")
    parts.append("</table>")
    if report is not None:  # last, after everything the bundle supplied
        parts.append(f"<p>proves: {e(report.proves)}</p><p><b>{e(report.verdict())}</b></p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)

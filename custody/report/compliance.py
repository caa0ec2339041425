"""The compliance report (issue 16 item 7): pure functions of the evidence and a time.

Each section is a dict ``{"id", "title", "status", "items", ...}`` with ``status``:

* ``ok``: checked, nothing found;
* ``findings``: checked, ``items`` lists what needs attention;
* ``not-available``: this deployment cannot answer it yet; ``reason`` says why (never
  made-up data).

Sections: ``rotations`` (keys by :mod:`custody.policy`, secrets by their expiry, as
:meth:`custody.secrets.Vault.due` counts days), ``ownership`` (secrets without an owner or
an expiry), ``grants``, ``mfa`` (principals without a confirmed TOTP enrolment),
``drills`` (custodians of the active share set without a drill on its epoch), ``alerts``
and ``checkpoint`` (the audit log's newest pinned checkpoint, its age, and whether the log
verifies against it). Nothing here reads a file, the store or the clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from custody import policy
from custody.audit.records import checkpoint_signers
from custody.audit.signers import TrustKey
from custody.audit.verify import audit_report
from custody.clock import parse, to_seconds
from custody.config import BranchPolicy
from custody.monitor.records import SCAN, from_entries
from custody.report.evidence import Evidence

REPORT_TYPE = "custody.compliance-report/v1"
MFA_ROLES = ("super-admin",)  # whose actions always need a second factor (issue 16 item 4)
ALERTS_UNAVAILABLE = (
    "no monitoring scan has run on this audit log yet ('custody alerts scan', from cron)"
)


def _section(sid: str, title: str, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "title": title,
        "status": "findings" if items else "ok",
        "items": items,
        **extra,
    }


def _unavailable(sid: str, title: str, reason: str) -> dict[str, Any]:
    return {"id": sid, "title": title, "status": "not-available", "reason": reason, "items": []}


def rotations(ev: Evidence, now: datetime, within_days: int) -> dict[str, Any]:
    """Keys overdue, due, soon due (within their branch's warning lead time) or missing;
    active secrets overdue, due today or expiring within *within_days*."""
    st = ev.store
    branches = {k: BranchPolicy(**v) for k, v in st["policy"]["branches"].items()}
    ages = [
        policy.KeyAge(
            key=k["key"],
            version=k["version"],
            created=parse(k["created"]) if k["created"] else None,
        )
        for k in st["keys"]
    ]
    items: list[dict[str, Any]] = []
    for d in policy.evaluate(ages, branches, now):
        if d.status == "ok":
            continue
        items.append(
            {
                "kind": "key",
                "name": d.key,
                "version": d.version,
                "class": d.key_class,
                "status": "soon" if d.status == "upcoming" else d.status,
                "days_left": d.days_left,
                "due_at": d.due_at.isoformat() if d.due_at else None,
            }
        )
    max_fail = int(st["policy"]["secret_max_rotation_failures"])
    for s in st["secrets"]:
        if s["state"] not in ("active", "rotating") or not s["expires"]:
            continue
        try:
            expires = parse(s["expires"])
        except ValueError:
            continue  # reported by the ownership section
        left = int(((expires - now).total_seconds() / 86400) // 1)
        if left > within_days:
            continue
        items.append(
            {
                "kind": "secret",
                "name": f"{s['env']}:{s['path']}",
                "class": s["class"],
                "status": "overdue" if left < 0 else "due" if left == 0 else "soon",
                "days_left": left,
                "due_at": s["expires"],
                "owner": s["owner"],
                "paused": s["rotation_failures"] >= max_fail,
            }
        )
    order = {"missing": 0, "overdue": 1, "due": 2, "soon": 3}
    items.sort(key=lambda i: (order.get(i["status"], 9), i["days_left"] or 0, i["name"]))
    return _section("rotations", "Overdue and soon-due rotations", items, within_days=within_days)


def ownership(ev: Evidence) -> dict[str, Any]:
    """Secrets (not destroyed) whose owner is empty, or whose expiry is missing or unreadable."""
    items = []
    for s in ev.store["secrets"]:
        if s["state"] == "destroyed":
            continue
        problems = []
        if not str(s["owner"] or "").strip():
            problems.append("no owner")
        try:
            if not s["expires"]:
                raise ValueError
            parse(s["expires"])
        except ValueError:
            problems.append("no expiry")
        if problems:
            items.append(
                {"name": f"{s['env']}:{s['path']}", "class": s["class"], "problems": problems}
            )
    return _section("ownership", "Secrets without an owner or an expiry", items)


def _entries(ev: Evidence) -> list[dict[str, Any]]:
    out = []
    for raw in ev.lines:
        try:
            e = json.loads(raw)
        except ValueError:
            continue  # the checkpoint section reports a damaged log
        if isinstance(e, dict):
            out.append(e)
    return out


def grants(ev: Evidence, now: datetime, entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Live grants (not revoked, inside their window) that have outlived their need:

    * ``never used``: no ``access grant use`` in the audit log, and half its window is gone;
    * ``idle``: used, but not in the last half-window, and half its window is gone;
    * ``principal revoked``: its principal is revoked or gone (the grant should have ended
      with it);
    * ``secret deleted``: the secret it names (an exact path) is soft-deleted, destroyed or
      absent.
    """
    secs = to_seconds(now)
    last_use: dict[str, int] = {}
    uses: dict[str, int] = {}
    for e in entries:
        if e.get("op") == "access grant use" and e.get("outcome") == "ok":
            gid = str((e.get("details") or {}).get("grant", ""))
            uses[gid] = uses.get(gid, 0) + 1
            last_use[gid] = max(last_use.get(gid, 0), int(e.get("time", 0)))
    principals = {p["name"]: p for p in ev.store["principals"]}
    secrets = {(s["env"], s["path"]): s for s in ev.store["secrets"]}
    items = []
    live = 0
    for g in ev.store["grants"]:
        if g["revoked_at"] is not None or not g["not_before"] <= secs < g["not_after"]:
            continue
        live += 1
        window = g["not_after"] - g["not_before"]
        half_gone = secs - g["not_before"] >= window / 2
        why = []
        if g["id"] not in uses:
            if half_gone:
                why.append("never used")
        elif half_gone and secs - last_use[g["id"]] >= window / 2:
            why.append("idle")
        p = principals.get(g["principal"])
        if p is None or p["revoked_at"] is not None:
            why.append("principal revoked")
        if not g["path"].endswith("/"):
            s = secrets.get((g["env"], g["path"]))
            if s is None or s["state"] in ("deprecated", "destroyed"):
                why.append("secret deleted")
        if why:
            items.append(
                {
                    "grant": g["id"],
                    "principal": g["principal"],
                    "name": f"{g['env']}:{g['path']}",
                    "actions": g["actions"],
                    "why": why,
                    "uses": uses.get(g["id"], 0),
                    "last_use": last_use.get(g["id"]),
                    "expires_in": g["not_after"] - secs,
                }
            )
    return _section("grants", "Grants that have outlived their need", items, live=live)


def mfa(ev: Evidence) -> dict[str, Any]:
    """Principals (not revoked) without a confirmed TOTP enrolment. ``required``: every
    action of their role needs a code (super-admin); the others need one to read a
    high-class secret, and in the default ``enrolled`` MFA mode an unenrolled principal is
    not asked for one, which is why this list matters."""
    confirmed = {m["principal"] for m in ev.store["mfa"] if m["confirmed_at"]}
    pending = {m["principal"] for m in ev.store["mfa"] if not m["confirmed_at"]}
    items = []
    current = 0
    for p in ev.store["principals"]:
        if p["revoked_at"] is not None:
            continue
        current += 1
        if p["name"] in confirmed:
            continue
        items.append(
            {
                "name": p["name"],
                "role": p["role"],
                "kind": p["kind"],
                "required": p["role"] in MFA_ROLES,
                "state": "enrolled, not confirmed" if p["name"] in pending else "not enrolled",
            }
        )
    items.sort(key=lambda i: (not i["required"], i["name"]))
    return _section("mfa", "Principals without MFA", items, principals=current)


def drills(ev: Evidence) -> dict[str, Any]:
    """Holders of the active share set who have not passed a drill on its epoch."""
    ss = ev.store["share_set"]
    title = "Custodians without a drill on the active epoch"
    if ss is None:
        return _unavailable(
            "drills", title, "no active share set (a development root has no custodians)"
        )
    items = [
        {"custodian": c, "epoch": ss["epoch"], "last_drill": None}
        for c in ss["holders"]
        if ss["last_drill"].get(c) is None
    ]
    return _section("drills", title, items, epoch=ss["epoch"], custodians=len(ss["holders"]))


def alerts(ev: Evidence) -> dict[str, Any]:
    """Alerts the audit log records as raised (``alert.raised``) and not acknowledged, and
    how far the monitor's scans have read (entries after its last scan are unchecked)."""
    title = "Open alerts"
    marker = b'"op":"alert.'
    scan_marker = b'"op":"' + SCAN.encode() + b'"'
    last_scan: dict[str, Any] | None = None
    raised = []
    for ln in ev.lines:
        if marker in ln:
            raised.append(json.loads(ln))
        elif scan_marker in ln:
            e = json.loads(ln)
            if e.get("op") == SCAN:
                last_scan = e
    if last_scan is None:
        return _unavailable("alerts", title, ALERTS_UNAVAILABLE)
    items = [
        {
            "id": r.id,
            "rule": r.rule,
            "kind": r.kind,
            "principal": r.principal,
            "target": r.target,
            "time": r.time,
            "seqs": list(r.seqs),
            "summary": r.summary,
        }
        for r in from_entries(raised)
        if r.open
    ]
    scanned_to = int((last_scan.get("details") or {}).get("to", 0))
    return _section(
        "alerts",
        title,
        items,
        last_scan_seq=last_scan.get("seq"),
        last_scan_time=last_scan.get("time"),
        unscanned_entries=sum(  # the monitor's own entries need no scan
            1 for ln in ev.lines[scanned_to:] if marker not in ln and scan_marker not in ln
        ),
    )


def checkpoint(
    ev: Evidence,
    now: datetime,
    *,
    trust: Sequence[TrustKey] | None,
    max_age: int,
) -> dict[str, Any]:
    """The newest checkpoint signed by a pinned key (or, without *trust*, by the key it
    embeds: ``pinned`` is then false), its age and how many entries follow it; and whether
    the log verifies (chain, checkpoint roots and signatures)."""
    secs = to_seconds(now)
    rep = audit_report(ev.log_id, ev.lines, list(ev.checkpoints), trust, now=secs)
    newest: dict[str, Any] | None = None
    for raw in ev.checkpoints:
        try:
            cp = json.loads(raw)
        except ValueError:
            continue
        signers = checkpoint_signers(cp, trust)
        if signers and (newest is None or cp["tree_size"] >= newest["tree_size"]):
            newest = {
                "tree_size": int(cp["tree_size"]),
                "time": int(cp["time"]),
                "root": str(cp["root"]),
                "signers": signers,
            }
    items: list[dict[str, Any]] = []
    if not rep.ok:
        items.extend({"problem": p} for p in rep.problems)
    info: dict[str, Any] = {
        "entries": len(ev.lines),
        "log_verifies": rep.ok,
        "pinned": trust is not None,
        "max_age_seconds": max_age,
        "last": None,
    }
    if newest is None:
        items.append(
            {
                "problem": "no checkpoint signed by a pinned key"
                if trust is not None
                else "no signed checkpoint"
            }
        )
    else:
        age = secs - newest["time"]
        behind = len(ev.lines) - newest["tree_size"]
        info["last"] = {**newest, "age_seconds": age, "entries_after": behind}
        if age > max_age:
            items.append({"problem": f"the newest checkpoint is {age} s old (max {max_age})"})
    return _section("checkpoint", "The audit log's last pinned checkpoint", items, **info)


def compliance_report(
    ev: Evidence,
    *,
    now: datetime,
    within_days: int = 30,
    trust: Sequence[TrustKey] | None = None,
    max_age: int = 86400,
) -> dict[str, Any]:
    """Every section, and a summary. JSON-ready; holds names, dates and counts only.

    Raises:
        ValueError: *now* is naive, or *within_days* / *max_age* is negative.
    """
    if within_days < 0 or max_age < 0:
        raise ValueError("within_days and max_age must not be negative")
    entries = _entries(ev)
    sections = [
        rotations(ev, now, within_days),
        ownership(ev),
        grants(ev, now, entries),
        mfa(ev),
        drills(ev),
        alerts(ev),
        checkpoint(ev, now, trust=trust, max_age=max_age),
    ]
    findings = sum(len(s["items"]) for s in sections)
    return {
        "type": REPORT_TYPE,
        "deployment_id": ev.store.get("deployment_id"),
        "log_id": ev.log_id,
        "at": now.isoformat(timespec="seconds"),
        "collected_at": ev.store.get("collected_at"),
        "source": ev.source,
        "ok": findings == 0,
        "findings": findings,
        "not_available": [s["id"] for s in sections if s["status"] == "not-available"],
        "sections": sections,
    }


def section_map(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The report's sections by id."""
    return {s["id"]: s for s in report["sections"]}

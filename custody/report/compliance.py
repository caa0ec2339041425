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
from custody.report.evidence import Evidence

REPORT_TYPE = "custody.compliance-report/v1"
MFA_ROLES = ("super-admin",)  # whose actions always need a second factor (issue 16 item 4)
ALERTS_UNAVAILABLE = (
    "this custody has no monitoring rules yet (issue 16 item 5: custody.monitor); "
    "no alert can be open"
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


def grants(ev: Evidence) -> dict[str, Any]:
    if ev.store.get("grants") is None:
        return _unavailable(
            "grants",
            "Grants that have outlived their need",
            str(ev.store.get("grants_unavailable") or "no grant records in this evidence"),
        )
    return _section("grants", "Grants that have outlived their need", [])


def mfa(ev: Evidence, now: datetime) -> dict[str, Any]:
    """Current principals without a confirmed TOTP enrolment (``required``: their role's
    actions always need one)."""
    secs = to_seconds(now)
    confirmed = {m["principal"] for m in ev.store["mfa"] if m["confirmed_at"]}
    pending = {m["principal"] for m in ev.store["mfa"] if not m["confirmed_at"]}
    items = []
    current = 0
    for p in ev.store["principals"]:
        if p["revoked_at"] is not None or p["valid_until"] <= secs:
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
    return _unavailable("alerts", "Open alerts", ALERTS_UNAVAILABLE)


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
    sections = [
        rotations(ev, now, within_days),
        ownership(ev),
        grants(ev),
        mfa(ev, now),
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

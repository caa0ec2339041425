"""Raised alerts as the audit log records them: ``alert.raised`` and ``alert.ack`` entries.

The audit log is the only record of alerts: listing them streams the log, and an
acknowledgement is one more entry, so no alert disappears without a trace. A principal
cannot acknowledge an alert about themselves (the insider who set it off would otherwise
be the one to close it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from custody.audit.log import AuditLog
from custody.errors import PolicyError, UsageError
from custody.monitor.model import Alert

RAISED = "alert.raised"
ACK = "alert.ack"
SCAN = "monitor.scan"


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRecord:
    """One alert as recorded: the alert, the seq of its ``alert.raised`` entry, its ack."""

    id: str
    seq: int
    raised_at: int
    rule: str
    kind: str
    principal: str
    target: str
    time: int
    seqs: tuple[int, ...]
    score: float
    summary: str
    facts: Mapping[str, Any] = field(default_factory=dict)
    ack: Mapping[str, Any] | None = None

    @property
    def open(self) -> bool:
        return self.ack is None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "raised_at": self.raised_at,
            "rule": self.rule,
            "kind": self.kind,
            "principal": self.principal,
            "target": self.target,
            "time": self.time,
            "seqs": list(self.seqs),
            "score": self.score,
            "summary": self.summary,
            "facts": dict(self.facts),
            "state": "open" if self.ack is None else "acknowledged",
            "ack": dict(self.ack) if self.ack else None,
        }


def raised_details(a: Alert) -> dict[str, Any]:
    """The details of an ``alert.raised`` entry (names, counts and seqs; never a value)."""
    j = a.to_json()
    return {k: j[k] for k in ("id", "rule", "kind", "principal", "time", "seqs", "score")} | {
        "summary": a.summary[:300],
        "facts": j["facts"],
    }


def from_entries(entries: Iterable[Mapping[str, Any]]) -> list[AlertRecord]:
    """Every alert raised in *entries* (audit entries, any order of seq), with its ack."""
    out: dict[str, AlertRecord] = {}
    acks: dict[str, Mapping[str, Any]] = {}
    for e in entries:
        op = e.get("op")
        if op != RAISED and op != ACK:
            continue
        d = e.get("details") or {}
        aid = str(d.get("id", ""))
        if op == ACK:
            acks.setdefault(
                aid,
                {
                    "by": e.get("actor"),
                    "time": e.get("time"),
                    "seq": e.get("seq"),
                    "note": d.get("note", ""),
                },
            )
            continue
        if aid in out:
            continue  # the first record of an id stands
        out[aid] = AlertRecord(
            id=aid,
            seq=int(e["seq"]),
            raised_at=int(e.get("time", 0)),
            rule=str(d.get("rule", "")),
            kind=str(d.get("kind", "")),
            principal=str(d.get("principal", "")),
            target=str(e.get("target", "")),
            time=int(d.get("time", 0)),
            seqs=tuple(int(s) for s in d.get("seqs", [])),
            score=float(d.get("score", 0)),
            summary=str(d.get("summary", "")),
            facts=dict(d.get("facts") or {}),
        )
    return [replace(r, ack=acks.get(r.id)) for r in out.values()]


def _entries(log: AuditLog, ops: tuple[bytes, ...]) -> Iterable[dict[str, Any]]:
    for line in log.iter_lines():
        if any(o in line for o in ops):  # cheap pre-filter; the op is checked after parsing
            yield json.loads(line)


def list_alerts(
    log: AuditLog, *, since: int | None = None, rule: str | None = None
) -> list[AlertRecord]:
    """The log's alerts, oldest first, raised at or after *since*, of rule (or kind) *rule*.

    Raises:
        StorageError: the audit log cannot be read.
    """
    recs = from_entries(_entries(log, (b'"op":"alert.',)))
    return [
        r
        for r in recs
        if (since is None or r.time >= since) and (rule is None or rule in (r.rule, r.kind))
    ]


def find(records: Iterable[AlertRecord], alert_id: str) -> AlertRecord:
    """The alert whose id is or starts with *alert_id* (at least 6 characters).

    Raises:
        UsageError: no alert, or more than one, matches.
    """
    if len(alert_id) < 6:
        raise UsageError("Give at least 6 characters of the alert id", "See 'custody alerts'.")
    hits = [r for r in records if r.id.startswith(alert_id)]
    if len(hits) != 1:
        raise UsageError(
            f"{'No' if not hits else 'More than one'} alert matches {alert_id[:24]!r}",
            "See 'custody alerts' for the ids.",
        )
    return hits[0]


def evidence(log: AuditLog, rec: AlertRecord) -> list[dict[str, Any]]:
    """The audit entries an alert names (its seqs), in seq order.

    Raises:
        StorageError: the audit log cannot be read.
    """
    out = []
    for s in sorted(set(rec.seqs)):
        lines = log.lines(s, s + 1)
        if lines:
            out.append(json.loads(lines[0]))
    return out


def ack(log: AuditLog, alert_id: str, actor: str, *, note: str = "") -> AlertRecord:
    """Acknowledge an open alert: one ``alert.ack`` entry naming it, the actor and *note*.

    Raises:
        UsageError: no such alert, or it is already acknowledged.
        PolicyError: *actor* is the principal the alert is about.
        AuditError: the entry could not be written (nothing is acknowledged).
    """
    rec = find(list_alerts(log), alert_id)
    if rec.ack is not None:
        raise UsageError(
            f"Alert {rec.id} is already acknowledged",
            f"By {rec.ack.get('by')} at entry {rec.ack.get('seq')}.",
        )
    if actor == rec.principal:
        raise PolicyError(
            f"{actor} cannot acknowledge an alert about themselves",
            "Another operator (an auditor or super-admin) must review and acknowledge it.",
        )
    e = log.append(ACK, rec.target or rec.principal, actor, details={"id": rec.id, "note": note})
    return replace(rec, ack={"by": actor, "time": e["time"], "seq": e["seq"], "note": note})

"""An alert: which rule fired, about whom, and the audit entries behind it.

An alert's id is a hash of its rule, kind, principal and seqs, so the same evidence always
gives the same id: a rescan of the log finds the alerts it already raised and raises no
duplicates, and an alert the log shows cannot be renamed away.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from custody.canonical import canonical_bytes, domain_hash


def alert_id(rule: str, kind: str, actor: str, seqs: tuple[int, ...]) -> str:
    body = canonical_bytes({"rule": rule, "kind": kind, "actor": actor, "seqs": list(seqs)})
    return domain_hash("custody/monitor/alert/v1", body).hex()[:20]


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One raised alert (no secret value: names, counts and seqs only)."""

    rule: str
    kind: str
    actor: str
    target: str
    time: int
    seqs: tuple[int, ...]
    score: float
    summary: str
    facts: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.seqs:
            raise ValueError("an alert names at least one audit entry")

    @property
    def id(self) -> str:
        return alert_id(self.rule, self.kind, self.actor, self.seqs)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "kind": self.kind,
            "principal": self.actor,
            "target": self.target,
            "time": self.time,
            "seqs": list(self.seqs),
            "score": round(self.score, 3),
            "summary": self.summary,
            "facts": dict(self.facts),
        }

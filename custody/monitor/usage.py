"""Who used what, from the audit log: each principal's last access, its reads and refusals,
and the versions of each secret it read (issue 17 item 8: the services screen).

A pure fold over audit entries (:func:`usage_of`), with the monitor's op vocabulary
(:data:`custody.monitor.rules.DEFAULT_OPS`) deciding what is a read. Entries hold names,
targets, outcomes and version numbers, never a value; so does the result.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from custody.monitor.rules import DEFAULT_OPS, INTERNAL_OPS

READ_OPS = frozenset(DEFAULT_OPS["read"])
DECIDE = "access decide"


@dataclass(slots=True)
class Usage:
    """One principal's use of custody, as the audit log records it."""

    name: str
    last_seq: int | None = None
    last_time: int = 0
    last_op: str = ""
    last_target: str = ""
    last_outcome: str = ""
    reads: int = 0
    refused: int = 0
    # target (ENV:PATH) -> the versions read, and the last read's time
    versions: dict[str, set[int]] = field(default_factory=dict)
    last_read: dict[str, int] = field(default_factory=dict)


def _entry(line: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    return line if isinstance(line, Mapping) else json.loads(line)


def _is_read(op: str, details: Any) -> bool:
    """A read op, or access control's allowing decision of a read (what a front end asks
    before it reads as that principal; its own entry may name the operator instead)."""
    if op in READ_OPS:
        return True
    return op == DECIDE and isinstance(details, Mapping) and details.get("action") == "read"


def usage_of(
    entries: Iterable[bytes | str | Mapping[str, Any]], names: Collection[str]
) -> dict[str, Usage]:
    """The usage of each principal in *names*, over *entries* (in log order).

    Intents count as nothing (the outcome entry is the access); a ``denied`` or ``failed``
    outcome is a refusal; an ``ok`` outcome of a read op, or an allowing ``access decide``
    of a read, is a read, with the version its details name when they do (the server
    records it).
    """
    out = {n: Usage(name=n) for n in names}
    for raw in entries:
        e = _entry(raw)
        u = out.get(str(e.get("actor", "")))
        op = str(e.get("op", ""))
        outcome = str(e.get("outcome", ""))
        if u is None or op in INTERNAL_OPS or outcome == "intent":
            continue
        target = str(e.get("target", ""))
        u.last_seq = int(e.get("seq", 0))
        u.last_time = int(e.get("time", 0))
        u.last_op, u.last_target, u.last_outcome = op, target, outcome
        if outcome in ("denied", "failed"):
            u.refused += 1
        elif outcome == "ok" and _is_read(op, e.get("details")):
            u.reads += 1
            u.last_read[target] = u.last_time
            d = e.get("details")
            version = d.get("version") if isinstance(d, Mapping) else None
            seen = u.versions.setdefault(target, set())
            if type(version) is int:
                seen.add(version)
    return out


__all__ = ["READ_OPS", "Usage", "usage_of"]

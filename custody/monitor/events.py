"""Audit entries as access events: one event per finished operation.

The CLI writes an ``intent`` entry (with the operation's details: env, path, label,
version) and later an outcome entry (``ok``, ``denied``, ``failed``) that names the
intent's seq. The rules want one event per operation, with the intent's details and the
outcome's result, and the seqs of both, so :class:`Joiner` holds intents until their
outcome arrives (a bounded map, kept in the monitor's state across scans). An entry with
no ``intent_seq`` (a library caller that writes one entry) is an event on its own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from custody.monitor.rules import INTERNAL_OPS

MAX_PENDING = 20000


@dataclass(frozen=True, slots=True)
class Event:
    """One finished operation: who did what to which target, when, and how it ended."""

    seq: int  # the outcome entry's seq
    seqs: tuple[int, ...]  # the intent's seq (when known) and the outcome's
    time: int
    actor: str
    op: str
    kind: str  # read, list, write, delete, restore, destroy, notice, other
    target: str
    outcome: str
    details: Mapping[str, Any]


class Joiner:
    """Pairs outcome entries with their intents; the pending intents are state."""

    def __init__(self, op_kinds: Mapping[str, str], pending: Any = None) -> None:
        self._kinds = dict(op_kinds)
        self.pending: OrderedDict[int, dict[str, Any]] = OrderedDict()
        for seq, det in pending or ():
            self.pending[int(seq)] = dict(det)

    def dump(self) -> list[list[Any]]:
        return [[s, d] for s, d in self.pending.items()]

    def feed(self, entry: Mapping[str, Any]) -> Event | None:
        """The event an entry completes, or None (an intent, an internal op)."""
        op = str(entry.get("op", ""))
        if op in INTERNAL_OPS:
            return None
        seq = int(entry["seq"])
        det = entry.get("details")
        details: dict[str, Any] = dict(det) if isinstance(det, Mapping) else {}
        outcome = str(entry.get("outcome", ""))
        if outcome == "intent":
            self.pending[seq] = details
            if len(self.pending) > MAX_PENDING:
                self.pending.popitem(last=False)
            return None
        seqs: tuple[int, ...] = (seq,)
        ref = details.get("intent_seq")
        if type(ref) is int:
            first = self.pending.pop(ref, None)
            if first is not None:
                details = {**first, **details}
                seqs = (ref, seq)
        return Event(
            seq=seq,
            seqs=seqs,
            time=int(entry.get("time", 0)),
            actor=str(entry.get("actor", "")),
            op=op,
            kind=self._kinds.get(op, "other"),
            target=str(entry.get("target", "")),
            outcome=outcome,
            details=details,
        )

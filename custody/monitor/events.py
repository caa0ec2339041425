"""Audit entries as access events: one event per finished operation.

The CLI writes an ``intent`` entry (with the operation's details: env, path, label,
version) and later an outcome entry (``ok``, ``denied``, ``failed``) that names the
intent's seq. The rules want one event per operation, with the intent's details and the
outcome's result, and the seqs of both, so :class:`Joiner` holds intents until their
outcome arrives (a bounded map, kept in the monitor's state across scans). An entry with
no ``intent_seq`` (a library caller that writes one entry) is an event on its own; an
intent that never gets its outcome becomes an ``unfinished`` event (see :class:`Joiner`).
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
    """Pairs outcome entries with their intents; the pending intents are state.

    An intent whose outcome has not come within *unfinished_after* seconds (by the times
    of later entries) becomes an event of its own with outcome ``unfinished``: a reader who
    kills the command after the value is printed, before its ``ok`` is written, is still
    seen reading.
    """

    def __init__(
        self, op_kinds: Mapping[str, str], pending: Any = None, unfinished_after: int = 600
    ) -> None:
        self._kinds = dict(op_kinds)
        self._after = unfinished_after
        # seq -> [time, actor, op, target, details]
        self.pending: OrderedDict[int, list[Any]] = OrderedDict()
        for item in pending or ():
            self.pending[int(item[0])] = list(item[1:])

    def dump(self) -> list[list[Any]]:
        return [[s, *v] for s, v in self.pending.items()]

    def _event(self, seqs: tuple[int, ...], t: int, actor: str, op: str, target: str,
               outcome: str, details: Mapping[str, Any]) -> Event:  # fmt: skip
        return Event(
            seq=seqs[-1],
            seqs=seqs,
            time=t,
            actor=actor,
            op=op,
            kind=self._kinds.get(op, "other"),
            target=target,
            outcome=outcome,
            details=details,
        )

    def _expired(self, now: int) -> list[Event]:
        out = []
        while self.pending:
            seq, (t, actor, op, target, det) = next(iter(self.pending.items()))
            if now - t <= self._after:
                break
            del self.pending[seq]
            out.append(self._event((seq,), t, actor, op, target, "unfinished", det))
        return out

    def feed(self, entry: Mapping[str, Any]) -> list[Event]:
        """The events an entry completes (usually one, none for an intent or an internal
        op), after any intents that have waited too long for their outcome."""
        t = int(entry.get("time", 0))
        out = self._expired(t) if self.pending else []
        op = str(entry.get("op", ""))
        if op in INTERNAL_OPS:
            return out
        seq = int(entry["seq"])
        det = entry.get("details")
        details: dict[str, Any] = dict(det) if isinstance(det, Mapping) else {}
        outcome = str(entry.get("outcome", ""))
        actor, target = str(entry.get("actor", "")), str(entry.get("target", ""))
        if outcome == "intent":
            self.pending[seq] = [t, actor, op, target, details]
            if len(self.pending) > MAX_PENDING:
                old, (t0, a0, o0, g0, d0) = self.pending.popitem(last=False)
                out.append(self._event((old,), t0, a0, o0, g0, "unfinished", d0))
            return out
        seqs: tuple[int, ...] = (seq,)
        ref = details.get("intent_seq")
        if type(ref) is int:
            first = self.pending.pop(ref, None)
            if first is not None:
                details = {**first[4], **details}
                seqs = (ref, seq)
        out.append(self._event(seqs, t, actor, op, target, outcome, details))
        return out

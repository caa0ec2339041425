"""Audit entries as access events: one event per finished operation.

The CLI writes an ``intent`` entry (with the operation's details: env, path, label,
version) and later an outcome entry (``ok``, ``denied``, ``failed``) that names the
intent's seq. The rules want one event per operation, with the intent's details and the
outcome's result, and the seqs of both, so :class:`Joiner` holds intents until their
outcome arrives (a bounded map, kept in the monitor's state across scans). An entry with
no ``intent_seq`` (a library caller that writes one entry) is an event on its own; an
intent that never gets its outcome becomes an ``unfinished`` event (see :class:`Joiner`).

Who acted is the *principal*, not the OS user who ran the command: the access layer's
entries a command writes on its way (``access decide``, ``access authenticate``, ``mfa
verify``, ``access grant use``) name the command's intent (``details.attempt``, see
:func:`custody.audit.log.attempt`), and are folded into that command's event: its actor
becomes the principal they name (a service by its token, ``--as NAME``), its seqs take
theirs, and its details take the decision's action, reason and class. An intent with
``as_principal`` (``--as``) names its principal too. Entries without the link (older logs)
fall back to pairing an ``access decide`` with the pending intent on the same target
within :data:`LINK_SECONDS` (held there, folded at its outcome), but only while the log
shows no link: once an entry carries ``details.attempt``, a decision without one was
written outside any audited command (the server, a library caller such as the TUI) and is
that principal's own attempt, never folded into another actor's command that happens to
be pending on the same target (and a decision held on a command that then links its own
entries is released as an event of its own). An access-layer entry that serves no pending
command stands on its own, attributed to its principal (a TOTP check to the principal
whose code it is).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from custody.monitor.rules import INTERNAL_OPS

MAX_PENDING = 20000
# Entries the access layer writes on behalf of a command (folded into its event).
ACCESS_OPS = frozenset({"access decide", "access authenticate", "mfa verify", "access grant use"})
LINK_SECONDS = 2
# The decision's details a folded command event takes.
_DECISION_KEYS = ("action", "reason", "class", "role", "kind", "grant", "title", "error")


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
        self,
        op_kinds: Mapping[str, str],
        pending: Any = None,
        unfinished_after: int = 600,
        linked: bool = False,
    ) -> None:
        self._kinds = dict(op_kinds)
        self._after = unfinished_after
        # the log carries details.attempt (written by a version that links): no more
        # pairing by target and time (state, like the pending intents)
        self.linked = bool(linked)
        # seq -> [time, actor, op, target, details, link]; link: {"principal", "seqs",
        # "details"} of the access-layer entries folded in (absent in older state)
        self.pending: OrderedDict[int, list[Any]] = OrderedDict()
        for item in pending or ():
            v = list(item[1:6])
            v.append(dict(item[6]) if len(item) > 6 and isinstance(item[6], Mapping) else {})
            self.pending[int(item[0])] = v

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

    def _folded(
        self, seq: int, first: list[Any], details: Mapping[str, Any] | None, end: int | None
    ) -> tuple[tuple[int, ...], str, dict[str, Any]]:
        """(seqs, actor, details) of the command whose intent is *first* (at *seq*), with
        the access-layer entries folded into it, ended by the entry at *end* (if any)."""
        actor, det, link = first[1], first[4], first[5]
        for g in link.pop("guess", ()):  # paired by target and time (an older log)
            gd = g.get("details")
            self._fold(link, g, str(g.get("op", "")), gd if isinstance(gd, Mapping) else {})
        merged = {**det, **link.get("details", {}), **(details or {})}
        who = link.get("principal") or det.get("as_principal") or actor
        if who != actor:
            merged["os_actor"] = actor
        seqs = sorted({seq, *link.get("seqs", ()), *(() if end is None else (end,))})
        return tuple(seqs), str(who), merged

    def _expired(self, now: int) -> list[Event]:
        out = []
        while self.pending:
            seq, first = next(iter(self.pending.items()))
            t, _actor, op, target = first[:4]
            if now - t <= self._after:
                break
            del self.pending[seq]
            seqs, who, det = self._folded(seq, first, None, None)
            out.append(self._event(seqs, t, who, op, target, "unfinished", det))
        return out

    def _fold(self, link: dict[str, Any], entry: Mapping[str, Any], op: str,
              details: Mapping[str, Any]) -> None:  # fmt: skip
        """Fold an access-layer entry into a pending command's *link*."""
        link.setdefault("seqs", []).append(int(entry["seq"]))
        who = _principal_of(entry, op)
        if who and not link.get("principal"):
            link["principal"] = who
        if op in ("access decide", "access authenticate"):
            got = link.setdefault("details", {})
            got.update({k: details[k] for k in _DECISION_KEYS if k in details})

    def _alone(self, entry: Mapping[str, Any]) -> Event:
        """An access-layer entry that serves no command: an event of its principal."""
        op, actor = str(entry.get("op", "")), str(entry.get("actor", ""))
        det = entry.get("details")
        details: dict[str, Any] = dict(det) if isinstance(det, Mapping) else {}
        who = _principal_of(entry, op)
        if who and who != actor:
            details["os_actor"] = actor
            actor = who
        return self._event((int(entry["seq"]),), int(entry.get("time", 0)), actor, op,
                           str(entry.get("target", "")), str(entry.get("outcome", "")),
                           details)  # fmt: skip

    def _link(
        self, entry: Mapping[str, Any], op: str, details: Mapping[str, Any]
    ) -> list[Event] | None:
        """Fold an access-layer entry into the pending command it serves (None if none).

        An entry that names its command (``attempt``) is folded, and any decision that
        was only paired with that command by target and time is released as an event of
        its own (the command links its own entries: that one was someone else's). A
        decision without the link, while the log has shown none, is held on the pending
        intent on the same target within :data:`LINK_SECONDS` and folded at its outcome.
        """
        ref = details.get("attempt")
        first = self.pending.get(ref) if type(ref) is int else None
        if first is not None:
            released = [self._alone(g) for g in first[5].pop("guess", ())]
            self._fold(first[5], entry, op, details)
            return released
        if op != "access decide" or self.linked:
            return None
        target, t = str(entry.get("target", "")), int(entry.get("time", 0))
        first = next(
            (
                v
                for v in reversed(self.pending.values())
                if v[3] == target and abs(t - v[0]) <= LINK_SECONDS
                and not v[5].get("principal") and not v[5].get("guess")
            ),
            None,
        )  # fmt: skip
        if first is None:
            return None
        first[5].setdefault("guess", []).append(dict(entry))
        return []

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
            self.pending[seq] = [t, actor, op, target, details, {}]
            if len(self.pending) > MAX_PENDING:
                old, first = self.pending.popitem(last=False)
                seqs0, who0, det0 = self._folded(old, first, None, None)
                out.append(self._event(seqs0, first[0], who0, first[2], first[3],
                                       "unfinished", det0))  # fmt: skip
            return out
        if "attempt" in details:
            self.linked = True
        if op in ACCESS_OPS:
            done = self._link(entry, op, details)
            if done is not None:
                return out + done
        seqs: tuple[int, ...] = (seq,)
        ref = details.get("intent_seq")
        if type(ref) is int:
            head = self.pending.pop(ref, None)
            if head is not None:
                seqs, actor, details = self._folded(ref, head, details, seq)
        elif op in ACCESS_OPS:
            out.append(self._alone(entry))
            return out
        out.append(self._event(seqs, t, actor, op, target, outcome, details))
        return out


def _principal_of(entry: Mapping[str, Any], op: str) -> str:
    """The principal an access-layer entry is about ('' when it names none)."""
    if op == "mfa verify":  # written by whoever runs the check; the code is the target's
        return str(entry.get("target", ""))
    who = str(entry.get("actor", ""))
    return "" if who in ("", "unknown", "anonymous") else who

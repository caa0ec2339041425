"""The rule kinds: each a small streaming state machine over access events.

A rule sees one :class:`~custody.monitor.events.Event` at a time, in seq order, and may
return an :class:`~custody.monitor.model.Alert`. Its memory (windows, per-principal
baselines, histograms) is plain JSON data (:meth:`Rule.dump`), kept in the monitor's
state between scans, so a scan reads only the entries added since the last one. What the
rules share (paths each principal has read, secrets in a soft-delete window, the newest
version seen per secret, security classes) is :class:`Shared`.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping
from typing import Any

from custody.monitor.events import Event
from custody.monitor.model import Alert
from custody.monitor.rules import READ_DURING_WINDOW, RuleSpec

DAY = 86400
ACCESS = frozenset({"read", "list", "write", "delete", "restore", "destroy"})
FAILED = frozenset({"denied", "failed"})
# A read that ended well, or whose outcome never came (the value may have been shown).
READ_OK = frozenset({"ok", "unfinished"})


def hour_of_week(t: int) -> int:
    """0 = Monday 00:00-00:59 UTC ... 167 = Sunday 23:00 (1970-01-01 was a Thursday)."""
    return ((t // DAY + 3) % 7) * 24 + (t % DAY) // 3600


class Shared:
    """What every rule may consult, updated after the rules have seen each event."""

    def __init__(
        self,
        learn_days: int,
        classes: Mapping[str, str],
        versions: Mapping[str, int],
        state: Mapping[str, Any] | None = None,
    ) -> None:
        s = state or {}
        self.learn_seconds = learn_days * DAY
        self.first_time: int | None = s.get("first_time")
        self.seen: dict[str, set[str]] = {a: set(t) for a, t in s.get("seen", {}).items()}
        self.deleted: dict[str, int] = dict(s.get("deleted", {}))
        self.notices: dict[str, list[int]] = {k: list(v) for k, v in s.get("notices", {}).items()}
        self.classes: dict[str, str] = {**dict(s.get("classes", {})), **classes}
        self.versions: dict[str, int] = dict(s.get("versions", {}))
        for k, v in versions.items():
            self.versions[k] = max(v, self.versions.get(k, 0))

    def dump(self) -> dict[str, Any]:
        return {
            "first_time": self.first_time,
            "seen": {a: sorted(t) for a, t in self.seen.items()},
            "deleted": self.deleted,
            "notices": self.notices,
            "classes": self.classes,
            "versions": self.versions,
        }

    def learning(self, t: int) -> bool:
        return self.first_time is None or t < self.first_time + self.learn_seconds

    def class_of(self, ev: Event) -> str:
        c = ev.details.get("class") or ev.details.get("security_class")
        return str(c) if c else self.classes.get(ev.target, "")

    def before(self, ev: Event) -> None:
        """Updates the rules must already see (the vault's own read-in-window notice)."""
        if self.first_time is None:
            self.first_time = ev.time
        if ev.kind == "notice" and ev.details.get("kind") == READ_DURING_WINDOW:
            self.notices.setdefault(ev.target, []).append(ev.seq)
            self.deleted.setdefault(ev.target, ev.time)
        c = ev.details.get("class")
        if isinstance(c, str) and c and ev.target:
            self.classes[ev.target] = c

    def after(self, ev: Event) -> None:
        ok = ev.outcome == "ok"
        if ev.kind == "read" and ev.outcome in READ_OK:
            self.seen.setdefault(ev.actor, set()).add(ev.target)
            if ev.details.get("label") == "current":
                self._version(ev.target, ev.details.get("version"))
        elif ev.kind == "write" and ok:
            for k in ("new_version", "version"):
                self._version(ev.target, ev.details.get(k))
            self.deleted.pop(ev.target, None)  # written again: a live secret
            self.notices.pop(ev.target, None)
        elif ev.kind == "delete" and ok:
            self.deleted[ev.target] = ev.time
        elif ok and (
            ev.kind == "restore" or (ev.kind == "destroy" and "version" not in ev.details)
        ):
            self.deleted.pop(ev.target, None)
            self.notices.pop(ev.target, None)

    def _version(self, target: str, v: Any) -> None:
        if type(v) is int and v > self.versions.get(target, 0):
            self.versions[target] = v


class Rule:
    """One configured rule. Subclasses implement :meth:`check`; state is JSON data."""

    kind = ""

    def __init__(self, spec: RuleSpec, max_seqs: int, state: Any = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.max_seqs = max_seqs
        self.exempt = frozenset(spec.exempt)
        self.load(state or {})

    def load(self, state: Mapping[str, Any]) -> None:
        self.cooldown: dict[str, int] = dict(state.get("cooldown", {}))

    def dump(self) -> dict[str, Any]:
        return {"cooldown": self.cooldown}

    def feed(self, ev: Event, sh: Shared) -> Alert | None:
        if ev.actor in self.exempt:
            return None
        return self.check(ev, sh)

    def check(self, ev: Event, sh: Shared) -> Alert | None:
        raise NotImplementedError

    def cooling(self, key: str, t: int, seconds: int) -> bool:
        """True within *seconds* of *key*'s last alert (either side: clocks of writers may
        disagree); otherwise this is *key*'s new last alert."""
        last = self.cooldown.get(key)
        if last is not None and abs(t - last) < seconds:
            return True
        if seconds:
            self.cooldown[key] = t
        return False

    def alert(
        self, ev: Event, seqs: Any, score: float, summary: str, target: str | None = None, **f: Any
    ) -> Alert:
        flat = sorted({int(s) for s in seqs})
        if len(flat) > self.max_seqs:
            f["seq_count"] = len(flat)
            flat = flat[: self.max_seqs // 2] + flat[-(self.max_seqs - self.max_seqs // 2) :]
        return Alert(
            rule=self.name,
            kind=self.kind,
            actor=ev.actor,
            target=ev.target if target is None else target,
            time=ev.time,
            seqs=tuple(flat),
            score=score * float(self.spec["weight"]),
            summary=summary,
            facts=f,
        )


def _same_attempt(ev: Event, seqs: list[Any]) -> bool:
    """Whether *ev* is part of the attempt whose entries are *seqs*: they share an entry,
    or *ev* names one of them as its command's intent (``intent_seq``, ``attempt``). Not
    "the same target a moment later": a scripted burst of guesses is many attempts."""
    if set(ev.seqs) & set(seqs):
        return True
    links = (ev.details.get("intent_seq"), ev.details.get("attempt"))
    return any(type(x) is int and x in seqs for x in links)


class FailedBurst(Rule):
    kind = "failed-burst"

    def load(self, state: Mapping[str, Any]) -> None:
        super().load(state)
        self.win: dict[str, deque[list[Any]]] = {
            a: deque(v) for a, v in state.get("win", {}).items()
        }

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "win": {a: list(d) for a, d in self.win.items() if d}}

    def check(self, ev: Event, sh: Shared) -> Alert | None:
        if ev.outcome not in FAILED:
            return None
        window, need = self.spec["window"], self.spec["threshold"]
        dq = self.win.setdefault(ev.actor, deque())
        if dq and _same_attempt(ev, dq[-1][2:]):
            dq[-1].extend(ev.seqs)  # one attempt refused twice (the access layer, the op)
            return None
        dq.append([ev.time, ev.target, *ev.seqs])
        while ev.time - dq[0][0] > window:
            dq.popleft()
        if len(dq) < need:
            return None
        span = ev.time - dq[0][0]
        seqs = [s for item in dq for s in item[2:]]
        n = len(dq)
        dq.clear()
        return self.alert(
            ev,
            seqs,
            1.0 + (window - span) / max(window, 1),
            f"{n} denied or failed attempts in {span} s",
            target="",
            count=n,
            span=span,
        )


class Volume(Rule):
    kind = "volume"

    def load(self, state: Mapping[str, Any]) -> None:
        super().load(state)
        # actor -> [day, count, fired, threshold or None, [past active-day counts], seqs]
        self.act: dict[str, list[Any]] = {}
        for a, v in state.get("act", {}).items():
            self.act[a] = [*v[:5], deque(v[5], maxlen=self.max_seqs)]

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "act": {a: [*v[:5], list(v[5])] for a, v in self.act.items()}}

    def _threshold(self, hist: list[int]) -> float | None:
        if len(hist) < self.spec["min_days"]:
            return None
        med = statistics.median(hist)
        mad = statistics.median(abs(x - med) for x in hist)
        return float(
            max(
                self.spec["min_reads"],
                self.spec["ratio"] * med,
                med + self.spec["z"] * 1.4826 * mad,
            )
        )

    def check(self, ev: Event, sh: Shared) -> Alert | None:
        if ev.kind != "read" or ev.outcome not in READ_OK:
            return None
        day = ev.time // DAY
        a = self.act.get(ev.actor)
        if a is None:
            a = self.act[ev.actor] = [day, 0, False, None, [], deque(maxlen=self.max_seqs)]
        if a[0] != day:
            if a[1]:
                a[4] = (a[4] + [a[1]])[-self.spec["history_days"] :]
            a[0], a[1], a[2], a[3] = day, 0, False, self._threshold(a[4])
            a[5].clear()
        a[1] += 1
        a[5].extend(ev.seqs)
        thr = a[3]
        if thr is None or a[2] or a[1] <= thr:
            return None
        a[2] = True
        med = statistics.median(a[4])
        return self.alert(
            ev,
            a[5],
            a[1] / thr,
            f"{a[1]} reads today against a median of {med:g} a day (threshold {thr:.0f})",
            target="",
            reads=a[1],
            median=med,
            threshold=round(thr, 1),
        )


class OffHours(Rule):
    kind = "off-hours"

    def load(self, state: Mapping[str, Any]) -> None:
        super().load(state)
        # actor -> [first time, total, [168 counts]]
        self.hist: dict[str, list[Any]] = {a: list(v) for a, v in state.get("hist", {}).items()}

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "hist": self.hist}

    def check(self, ev: Event, sh: Shared) -> Alert | None:
        if ev.kind not in ACCESS:
            return None
        h = self.hist.get(ev.actor)
        if h is None:
            h = self.hist[ev.actor] = [ev.time, 0, [0] * 168]
        how = hour_of_week(ev.time)
        out = None
        total = h[1]
        if total >= self.spec["min_events"] and ev.time - h[0] >= self.spec["min_days"] * DAY:
            n = self.spec["neighbours"]
            near = sum(h[2][(how + k) % 168] for k in range(-n, n + 1))
            frac = near / total
            floor = self.spec["min_fraction"]
            if frac < floor and not self.cooling(ev.actor, ev.time, self.spec["cooldown"]):
                day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[how // 24]
                out = self.alert(
                    ev,
                    ev.seqs,
                    1.0 + (floor - frac) / floor,
                    f"{ev.op} on {day} {how % 24:02d}:00 UTC, an hour with {near} of "
                    f"{total} past operations",
                    hour_of_week=how,
                    share=round(frac, 5),
                )
        h[1] += 1
        h[2][how] += 1
        return out


class Enumeration(Rule):
    kind = "enumeration"

    def load(self, state: Mapping[str, Any]) -> None:
        super().load(state)
        self.new: dict[str, deque[list[Any]]] = {
            a: deque(v) for a, v in state.get("new", {}).items()
        }
        self.lists: dict[str, deque[list[int]]] = {
            a: deque(v) for a, v in state.get("lists", {}).items()
        }

    def dump(self) -> dict[str, Any]:
        return {
            **super().dump(),
            "new": {a: list(d) for a, d in self.new.items() if d},
            "lists": {a: list(d) for a, d in self.lists.items() if d},
        }

    def _push(self, store: dict[str, Any], ev: Event, item: list[Any], need: int) -> Any:
        dq = store.setdefault(ev.actor, deque())
        dq.append(item)
        while ev.time - dq[0][0] > self.spec["window"]:
            dq.popleft()
        if len(dq) < need:
            return None
        items = list(dq)
        dq.clear()
        return items

    def check(self, ev: Event, sh: Shared) -> Alert | None:
        if ev.kind == "list":
            items = self._push(self.lists, ev, [ev.time, *ev.seqs], self.spec["list_ops"])
            if items:
                return self.alert(
                    ev,
                    [s for i in items for s in i[1:]],
                    len(items) / self.spec["list_ops"],
                    f"{len(items)} list operations within {self.spec['window']} s",
                    target="",
                    lists=len(items),
                )
            return None
        if ev.kind != "read" or ev.outcome not in READ_OK or sh.learning(ev.time):
            return None
        if ev.target in sh.seen.get(ev.actor, ()):
            return None
        dq = self.new.get(ev.actor)
        if dq and any(i[1] == ev.target for i in dq):
            return None
        items = self._push(self.new, ev, [ev.time, ev.target, *ev.seqs], self.spec["new_paths"])
        if not items:
            return None
        return self.alert(
            ev,
            [s for i in items for s in i[2:]],
            len(items) / self.spec["new_paths"],
            f"{len(items)} secrets never read before, within {self.spec['window']} s",
            target="",
            paths=len(items),
        )


class FirstHigh(Rule):
    kind = "first-high"

    def check(self, ev: Event, sh: Shared) -> Alert | None:
        if ev.kind != "read" or ev.outcome not in READ_OK or sh.learning(ev.time):
            return None
        cls = sh.class_of(ev)
        if cls not in self.spec["classes"] or ev.target in sh.seen.get(ev.actor, ()):
            return None
        if self.cooling(ev.actor, ev.time, self.spec["cooldown"]):
            return None
        return self.alert(
            ev, ev.seqs, 1.0, f"first read of {cls}-class {ev.target}", security_class=cls
        )


class OldVersion(Rule):
    kind = "old-version"

    def check(self, ev: Event, sh: Shared) -> Alert | None:
        if ev.kind != "read" or ev.outcome not in READ_OK:
            return None
        d = ev.details
        label, state, ver = d.get("label"), d.get("version_state"), d.get("version")
        why = ""
        if label in self.spec["labels"]:
            why = f"label {label}"
        elif state in self.spec["states"]:
            why = f"a {state} version"
        elif type(ver) is int and ver < sh.versions.get(ev.target, 0):
            why = f"version {ver} (v{sh.versions[ev.target]} is newer)"
        if not why:
            return None
        return self.alert(ev, ev.seqs, 1.0, f"read of {ev.target} by {why}", version=ver)


class RevokedCredential(Rule):
    kind = "revoked-credential"

    def check(self, ev: Event, sh: Shared) -> Alert | None:
        if ev.outcome not in FAILED:
            return None
        d = ev.details
        text = " ".join(str(d.get(k, "")) for k in ("reason", "title", "error")).lower()
        hit = next((r for r in self.spec["reasons"] if r in text), None)
        if hit is None or self.cooling(ev.actor, ev.time, self.spec["cooldown"]):
            return None
        return self.alert(ev, ev.seqs, 1.0, f"{ev.op} refused: credential {hit}", reason=hit)


class SoftDeleteRead(Rule):
    kind = "soft-delete-read"

    def check(self, ev: Event, sh: Shared) -> Alert | None:
        if ev.kind != "read" or ev.target not in sh.deleted:
            return None
        notes = sh.notices.pop(ev.target, [])
        if self.cooling(f"{ev.actor}|{ev.target}", ev.time, self.spec["cooldown"]):
            return None
        return self.alert(
            ev,
            [*ev.seqs, *notes],
            1.0,
            f"read of {ev.target} while it is soft-deleted ({ev.outcome})",
            deleted_at=sh.deleted[ev.target],
        )


RULE_TYPES: Mapping[str, type[Rule]] = {
    r.kind: r
    for r in (
        FailedBurst,
        Volume,
        OffHours,
        Enumeration,
        FirstHigh,
        OldVersion,
        RevokedCredential,
        SoftDeleteRead,
    )
}

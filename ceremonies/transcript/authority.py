"""Who may authorise what: quorum floors, gates, a second person, revocations (pure).

:class:`Rules` (:mod:`ceremonies.transcript.rules`) counts the approvals of a gated action
against the threshold its *policy* names. But the policy is written by the coordinator,
so a coordinator alone could name a threshold of one, leave the gated action out, or
route around it with an exception. This module checks what the policy cannot lower, on
the very walk the recorder (before writing) and the verifier (afterwards) share:

* **Floors** (at ``ceremony.open``): after the bootstrap enrolment, an ``enrol`` action
  needs at least 2 super-admins when the roster has two or more, else a majority of the
  roster's custodians (:func:`roster_change_quorum`); a ``rotate-root`` action needs
  custodians. The bootstrap is the first enrolment: no previous checkpoint and a roster
  of the coordinator alone; the report says so.
* **Gates** (:data:`GATES`): the gated action of a ceremony kind must be recorded before
  its gate step is done and before any later step, whatever exception was recorded; an
  enrol or emergency-rotate script must hold its gate step, and never closes
  ``completed`` without the action (:data:`STRICT_GATES`).
* **A second person** for ``emergency-rotate``: an ``emergency-rotate`` event carrying a
  valid approval, bound to its action digest, from a witness or a super-admin who is
  neither the coordinator (the ``ceremony.open`` actor) nor the event's actor.
* **Revoked during the ceremony**: a ``roster.revoked`` event names a participant whose
  store entry was revoked after the policy was signed; no later approval of theirs counts.

Findings use the verifier's ``quorum`` check id. Kept apart from :mod:`.rules` on purpose
(it belongs to the trust-model work of issue 11); ``Rules`` calls :meth:`Authority.feed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from custody.audit.signers import verify_signature

from .model import KIND_CLOSE, KIND_OPEN, FormatError, Policy, RosterEntry, Threshold
from .records import Event, binding_problems, gated_approvals

Finding = tuple[str, str]

GATES: dict[str, tuple[str, str]] = {
    "enrol": ("enrol", "enrol"),
    "rotate-root": ("rotate-root", "approve"),
    "emergency-rotate": ("emergency-rotate", "second-person"),
}
"""ceremony kind -> (gated action kind, gate step)."""

STRICT_GATES = frozenset({"enrol", "emergency-rotate"})
"""Kinds whose script must hold the gate step, and which never close ``completed`` without
the gated action. (rotate-root is held to its gate step only when its script has one:
older transcripts, and the golden fixtures, name their steps differently.)"""

SECOND_PERSON_ACTION = "emergency-rotate"
SECOND_PERSON_ROLES: tuple[str, ...] = ("witness", "super-admin")
KIND_REVOKED = "roster.revoked"


def roster_change_quorum(roster: Sequence[RosterEntry]) -> Threshold | None:
    """The quorum that must approve adding or revoking a participant after the bootstrap.

    Two super-admins when *roster* (the currently usable members) has two or more; with a
    single super-admin, a strict majority of the roster's custodians. None when neither
    exists (a single super-admin and no custodian: nobody can be added any more).
    """
    admins = sum(1 for e in roster if e.role == "super-admin")
    if admins >= 2:
        return Threshold(role="super-admin", count=2)
    custodians = sum(1 for e in roster if e.role == "custodian")
    if custodians == 0:
        return None
    return Threshold(role="custodian", count=custodians // 2 + 1)


def is_bootstrap(policy: Policy) -> bool:
    """The first enrolment: no previous checkpoint, and the coordinator alone on the roster."""
    return (
        policy.kind == "enrol"
        and policy.prev_checkpoint is None
        and len(policy.roster) == 1
        and policy.roster[0].role == "super-admin"
    )


def floor_findings(policy: Policy) -> tuple[list[Finding], list[Finding]]:
    """(problems, notes) about the thresholds *policy* names against the floors."""
    problems: list[Finding] = []
    notes: list[Finding] = []
    if policy.kind == "enrol":
        t = policy.thresholds.get("enrol")
        if is_bootstrap(policy):
            notes.append(("quorum", f"bootstrap enrolment by {policy.roster[0].name} alone"))
            return problems, notes
        floor = roster_change_quorum(policy.roster)
        if floor is None:
            problems.append(
                ("quorum", "enrol: the roster has one super-admin and no custodian to approve")
            )
        elif t is None or t.role != floor.role or t.count < floor.count:
            got = f"{t.count} {t.role}" if t else "none"
            problems.append(
                (
                    "quorum",
                    f"enrol needs {floor.count} {floor.role}(s) to approve, policy names {got}",
                )
            )
    elif policy.kind == "rotate-root":
        t = policy.thresholds.get("rotate-root")
        if t is None or t.role != "custodian":
            got = f"{t.count} {t.role}" if t else "none"
            problems.append(
                ("quorum", f"rotate-root needs custodian approvals, policy names {got}")
            )
    return problems, notes


@dataclass(slots=True)
class AuthorityState:
    opener: str | None = None
    gated_at: int | None = None
    revoked: dict[str, int] = field(default_factory=dict)


class Authority:
    """Stateful walk over a ceremony's events (see module docstring)."""

    def __init__(self, policy: Policy, info: list[Finding]) -> None:
        self.policy = policy
        self.info = info
        self.state = AuthorityState()

    def snapshot(self) -> AuthorityState:
        return replace(self.state, revoked=dict(self.state.revoked))

    def restore(self, s: AuthorityState) -> None:
        self.state = s

    def feed(self, ev: Event, where: str, nonces: dict[str, int]) -> list[Finding]:
        """Check one event (after :class:`Rules` did); *nonces* is the walk's used-nonce map."""
        p, s = self.policy, self.state
        out: list[Finding] = []
        if ev.kind == KIND_OPEN and s.opener is None:
            s.opener = ev.actor
            problems, notes = floor_findings(p)
            out += [(c, f"{where}: {m}") for c, m in problems]
            self.info.extend(notes)
        if ev.kind == KIND_REVOKED:
            name = ev.body.get("name")
            if isinstance(name, str):
                s.revoked.setdefault(name, ev.seq)
        out += self._revoked_approvals(ev, where)
        gate = GATES.get(p.kind)
        if gate is None:
            return out
        action, gate_step = gate
        strict = p.kind in STRICT_GATES
        if strict and ev.kind == KIND_OPEN and gate_step not in p.script:
            out.append(("quorum", f"{where}: the {p.kind} script has no {gate_step} step"))
        if (
            strict
            and ev.kind == KIND_CLOSE
            and ev.body.get("outcome") == "completed"
            and s.gated_at is None
        ):
            out.append(("quorum", f"{where}: completed without an approved {action} action"))
        if gate_step not in p.script:
            return out
        if ev.kind == action:
            if action == SECOND_PERSON_ACTION and action not in p.thresholds:
                found = self._second_person(ev, where, nonces)
                out += found
                if found:
                    return out
            if s.gated_at is None:
                s.gated_at = ev.seq
            return out
        if s.gated_at is None and ev.step in p.script:
            idx, gate_idx = p.script.index(ev.step), p.script.index(gate_step)
            if idx > gate_idx or (idx == gate_idx and ev.kind == "step.done"):
                out.append(
                    (
                        "quorum",
                        f"{where}: step {ev.step} before the {action} action was approved "
                        f"and recorded (step {gate_step})",
                    )
                )
        return out

    def _revoked_approvals(self, ev: Event, where: str) -> list[Finding]:
        raw = ev.body.get("approvals")
        if not self.state.revoked or not isinstance(raw, list):
            return []
        out: list[Finding] = []
        for a in raw:
            who = a.get("approver") if isinstance(a, dict) else None
            if isinstance(who, str) and who in self.state.revoked:
                out.append(
                    (
                        "quorum",
                        f"{where}: approval of {who} does not count: revoked during the "
                        f"ceremony (event {self.state.revoked[who]})",
                    )
                )
        return out

    def _second_person(self, ev: Event, where: str, nonces: dict[str, int]) -> list[Finding]:
        p, b = self.policy, ev.body
        try:
            aid, digest, approvals = gated_approvals(
                ev, p.ceremony_id, "the second person's approval"
            )
        except (FormatError, ValueError, TypeError) as exc:
            return [("quorum", f"{where}: {ev.kind}: {exc}")]
        out: list[Finding] = []
        if b.get("action_digest") != digest:
            out.append(("quorum", f"{where}: {ev.kind} {aid}: action digest does not match params"))
        excluded = {ev.actor, self.state.opener}
        good: dict[str, str] = {}
        for a in approvals:
            who = f"{ev.kind} {aid}: {a.approver}'s approval"
            m = p.member(a.approver)
            if m is None:
                out.append(("quorum", f"{where}: {who}: {a.approver} is not enrolled"))
                continue
            bad = []
            if not verify_signature(m.alg, m.public, a.sig, a.signing_input()):
                bad.append("has a bad signature")
            if m.role not in SECOND_PERSON_ROLES:
                bad.append(f"is from a {m.role}, not a witness or a super-admin")
            if a.approver in excluded:
                bad.append("is the coordinator's own, not a second person's")
            bad += binding_problems(
                a,
                ev,
                aid,
                digest,
                ceremony_id=p.ceremony_id,
                window=p.approval_window,
                nonces=nonces,
            )
            for at in (a.issued_at, ev.time):
                if m.valid_at(at):
                    bad.append("was signed with an invalid key")
                    break
            if bad:
                out += [("quorum", f"{where}: {who} {x}") for x in bad]
            else:
                good.setdefault(a.approver, m.role)
        if not good:
            out.append(("quorum", f"{where}: {ev.kind} {aid}: no second person co-signed"))
        elif not out:
            people = ", ".join(f"{n} ({r})" for n, r in good.items())
            self.info.append(("quorum", f"{ev.kind} {aid}: second person {people}"))
        return out


__all__ = [
    "GATES",
    "KIND_REVOKED",
    "SECOND_PERSON_ACTION",
    "SECOND_PERSON_ROLES",
    "Authority",
    "AuthorityState",
    "floor_findings",
    "is_bootstrap",
    "roster_change_quorum",
]

"""Approvals of a quorum-gated step, idempotent across interruptions.

A gated step (rotate-root's ``approve``, enrol's ``enrol``) records its action with the
approvals that met the quorum in ONE transcript event. A process killed after that event
but before the step's ``step.done`` leaves the approvals recorded; on resume the step
must not record them again (the verifier's "each used once") nor count anyone twice.
So every gated handler first asks :func:`recorded_for` what the transcript already holds
for its action (same action kind, id and digest):

* the action is recorded: the step goes on with the recorded approvers, records nothing
  new, and any approvals handed in again are only recognised (same approver and nonce:
  "already recorded") or ignored (another approval from someone already counted);
* it is not: handed-in approvals are counted by distinct participant, with every nonce
  the transcript already used refused as reused.

Before a gated step counts anything, :func:`screen_approvals` compares the policy's roster
with the store's: a participant revoked (or re-keyed) since the policy was signed is
recorded once as ``roster.revoked`` and their approvals no longer count (the verifier
refuses any later approval of theirs, :mod:`ceremonies.transcript.authority`).

emergency-rotate's ``second-person`` step is not a policy threshold: its approval comes
from one witness or a super-admin other than the coordinator (:func:`second_person_members`).

:func:`request_for` builds the public :class:`~ceremonies.runner.views.ApprovalRequest`
both the handler and :meth:`CeremonyRunner.pending_request` return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ceremonies.roster import Roster
from ceremonies.runner.views import ApprovalRequest
from ceremonies.transcript.authority import KIND_REVOKED, SECOND_PERSON_ACTION, SECOND_PERSON_ROLES
from ceremonies.transcript.records import Approval

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the transcript holds for one action: the recording event's seq (None when not
    recorded), its approvals, and the distinct approvers in recording order."""

    seq: int | None
    time: int | None
    approvals: tuple[Approval, ...]
    approvers: tuple[str, ...]


def _approvals_of(body: Any) -> list[Approval]:
    out = []
    for a in body.get("approvals", []) if isinstance(body, dict) else []:
        try:
            out.append(Approval.from_json(a))
        except (ValueError, TypeError, KeyError):
            continue  # the recorder and verifier refuse malformed approvals; skip here
    return out


def recorded_for(r: CeremonyRunner, action: str, action_id: str, digest: str) -> Recorded:
    """The approvals this transcript already recorded for *action* (id and digest)."""
    for ev in r.rec.events:
        b = ev.body
        if (
            ev.kind == action
            and b.get("action_id") == action_id
            and b.get("action_digest") == digest
        ):
            apps = _approvals_of(b)
            return Recorded(
                ev.seq, ev.time, tuple(apps), tuple(dict.fromkeys(a.approver for a in apps))
            )
    return Recorded(None, None, (), ())


def used_nonces(r: CeremonyRunner) -> set[str]:
    """Nonces of every approval this transcript recorded (each may be used once)."""
    gated = {*r.rec.policy.thresholds, SECOND_PERSON_ACTION}
    return {a.nonce for ev in r.rec.events if ev.kind in gated for a in _approvals_of(ev.body)}


def revoked_since(r: CeremonyRunner, now: int) -> dict[str, str]:
    """Policy roster members the store no longer holds as usable with the same key at *now*
    (revoked, expired or re-keyed after the policy was signed): name -> why. The bootstrap
    enrolment's coordinator is not in the store yet and is not listed."""
    roster = Roster(r.dep.store)
    if not roster.members():
        return {}
    out: dict[str, str] = {}
    for e in r.rec.policy.roster:
        m = roster.get(e.name)
        if m is None or m.public != e.public:
            out[e.name] = f"{e.name} is no longer enrolled with this key"
        elif (why := m.usable_at(now)) is not None:
            when = f" at {m.revoked_at}" if m.revoked_at is not None else ""
            out[e.name] = f"{why}{when}, during this ceremony"
    return out


def screen_approvals(r: CeremonyRunner, step: str, inputs: Any) -> Any:
    """Record who was revoked since the policy was signed (once each, as ``roster.revoked``)
    and drop their handed-in approvals, saying so. Returns the inputs that may count."""
    now = r.clock()
    gone = revoked_since(r, now)
    noted = {ev.body.get("name") for ev in r.rec.events if ev.kind == KIND_REVOKED}
    for name, why in gone.items():
        if name not in noted:
            e = r.rec.policy.member(name)
            m = Roster(r.dep.store).get(name)
            r.record(
                KIND_REVOKED,
                {
                    "name": name,
                    "fingerprint": e.fingerprint if e else "",
                    "revoked_at": m.revoked_at if m is not None else None,
                    "reason": why,
                },
                step=step,
            )
    keep = []
    for a in inputs.approvals:
        if a.approver in gone:
            r.messages.append(f"approval of {a.approver} not counted: {gone[a.approver]}")
        else:
            keep.append(a)
    return replace(inputs, approvals=tuple(keep)) if len(keep) != len(inputs.approvals) else inputs


def coordinators(r: CeremonyRunner) -> set[str]:
    """Who runs this ceremony: the ``ceremony.open`` actor and the current signer."""
    first = r.rec.events[0].actor if r.rec.events else r.signer.name
    return {first, r.signer.name}


def second_person_members(
    r: CeremonyRunner, now: int
) -> dict[str, tuple[str, str, bytes, str | None]]:
    """count_approvals members for the second person: witnesses and super-admins other than
    the coordinator count as role ``second-person``; anyone else keeps their own role."""
    coord = coordinators(r)
    out: dict[str, tuple[str, str, bytes, str | None]] = {}
    for e in r.rec.policy.roster:
        why = e.valid_at(now)
        if e.role in SECOND_PERSON_ROLES and e.name in coord:
            out[e.name] = (
                e.role,
                e.alg,
                e.public,
                why or "is the coordinator, not a second person",
            )
        elif e.role in SECOND_PERSON_ROLES:
            out[e.name] = ("second-person", e.alg, e.public, why)
        else:
            out[e.name] = (e.role, e.alg, e.public, why)
    return out


def request_for(
    r: CeremonyRunner, step: str, action: str, action_id: str, params: dict[str, Any]
) -> ApprovalRequest:
    """The public approval request of *action* (see :class:`ApprovalRequest`). Members
    revoked since the policy was signed are not eligible."""
    digest = r.rec.action_digest(action, action_id, params)
    now = r.clock()
    gone = revoked_since(r, now)
    if action == SECOND_PERSON_ACTION and action not in r.rec.policy.thresholds:
        members = second_person_members(r, now)
        role, needed = "second-person", 1
        eligible = tuple(
            n
            for n, (ro, _alg, _p, why) in members.items()
            if ro == role and not why and n not in gone
        )
    else:
        t = r.rec.policy.thresholds[action]
        role, needed = t.role, t.count
        eligible = tuple(
            e.name
            for e in r.rec.policy.roster
            if e.role == t.role and e.valid_at(now) is None and e.name not in gone
        )
    rec = recorded_for(r, action, action_id, digest)
    return ApprovalRequest(
        ceremony_id=r.ceremony_id,
        step=step,
        action=action,
        action_id=action_id,
        params=params,
        action_digest=digest,
        role=role,
        needed=needed,
        window=r.rec.policy.approval_window,
        eligible=eligible,
        recorded=rec.approvers,
    )


def recognise(r: CeremonyRunner, rec: Recorded, handed: Sequence[Approval]) -> None:
    """Say what happens to approvals handed in again after the action was recorded."""
    nonces = {a.nonce for a in rec.approvals}
    where = f"event {rec.seq}"
    for a in handed:
        if a.nonce in nonces:
            r.messages.append(
                f"approval of {a.approver} is already recorded ({where}); not recorded again"
            )
        elif a.approver in rec.approvers:
            r.messages.append(
                f"{a.approver} already approved ({where}); their other approval is not counted"
            )
        else:
            r.messages.append(
                f"approval of {a.approver} not needed: the quorum was already recorded ({where})"
            )


__all__ = [
    "Recorded",
    "coordinators",
    "recognise",
    "recorded_for",
    "request_for",
    "revoked_since",
    "screen_approvals",
    "second_person_members",
    "used_nonces",
]

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

:func:`request_for` builds the public :class:`~ceremonies.runner.views.ApprovalRequest`
both the handler and :meth:`CeremonyRunner.pending_request` return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ceremonies.runner.views import ApprovalRequest
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
    gated = set(r.rec.policy.thresholds)
    return {a.nonce for ev in r.rec.events if ev.kind in gated for a in _approvals_of(ev.body)}


def request_for(
    r: CeremonyRunner, step: str, action: str, action_id: str, params: dict[str, Any]
) -> ApprovalRequest:
    """The public approval request of *action* (see :class:`ApprovalRequest`)."""
    digest = r.rec.action_digest(action, action_id, params)
    t = r.rec.policy.thresholds[action]
    now = r.clock()
    eligible = tuple(
        e.name for e in r.rec.policy.roster if e.role == t.role and e.valid_at(now) is None
    )
    rec = recorded_for(r, action, action_id, digest)
    return ApprovalRequest(
        ceremony_id=r.ceremony_id,
        step=step,
        action=action,
        action_id=action_id,
        params=params,
        action_digest=digest,
        role=t.role,
        needed=t.count,
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


__all__ = ["Recorded", "recognise", "recorded_for", "request_for", "used_nonces"]

"""The enrol ceremony: add or revoke participants with a quorum of super-admins.

Owns ``review`` (names are new, revocations exist) and ``enrol`` (the coordinator's own
approval plus any handed in; waits when they are not a quorum, then applies the roster
change in the store).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ceremonies.engine.quorum import count_approvals, require_quorum
from ceremonies.participants import Identity, Roster
from ceremonies.runner.steps.base import WAIT, first_per_approver, on
from ceremonies.transcript.records import Approval
from custody.errors import UsageError

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner, Inputs


@on("enrol", "review")
def enrol_review(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    roster = Roster(r.dep.store)
    adds = r.params.get("add", [])
    for a in adds:
        if roster.get(a["name"]) is not None:
            raise UsageError(f"{a['name']} is already enrolled", "Revoke first, or rename.")
    for n in r.params.get("revoke", []):
        if roster.get(n) is None:
            raise UsageError(f"{n} is not enrolled", "See 'custody participant list'.")
    return {"add": [{k: a[k] for k in ("name", "role", "fingerprint")} for a in adds],
            "revoke": list(r.params.get("revoke", []))}


def enrol_action(r: CeremonyRunner) -> tuple[str, dict[str, Any]]:
    return (f"enrol/{r.ceremony_id[:8]}",
            {"add": [{k: a[k] for k in ("name", "role", "fingerprint")} for a in
                     r.params.get("add", [])], "revoke": list(r.params.get("revoke", []))})


@on("enrol", "enrol")
def enrol_apply(r: CeremonyRunner, inputs: Inputs) -> Any:
    action_id, params = enrol_action(r)
    digest = r.rec.action_digest("enrol", action_id, params)
    t = r.rec.policy.thresholds["enrol"]
    now = r.clock()
    mine = Approval.create(r.signer, ceremony_id=r.ceremony_id, action="enrol",
                           action_id=action_id, digest=digest, now=now,
                           window=r.rec.policy.approval_window)
    approvals = [mine, *inputs.approvals]
    members = {e.name: (e.role, e.public, e.valid_at(now)) for e in r.rec.policy.roster}
    res = count_approvals(approvals, members=members, role=t.role, needed=t.count,
                          ceremony_id=r.ceremony_id, action="enrol", action_id=action_id,
                          digest=digest, now=now, window=r.rec.policy.approval_window)
    r.request = {"type": "custody-approval-request", "ceremony_id": r.ceremony_id,
                 "action": "enrol", "action_id": action_id, "params": params,
                 "action_digest": digest, "role": t.role, "needed": t.count,
                 "window": r.rec.policy.approval_window}
    if not res.met and not inputs.approvals:
        return WAIT
    require_quorum(res, action="enrol")
    good = first_per_approver(approvals, res.counted)
    r.rec.record_action("enrol", "enrol", r.signer, action_id=action_id, params=params,
                        approvals=good, now=now)
    roster = Roster(r.dep.store)
    for a in r.params.get("add", []):
        if roster.get(a["name"]) is None:
            roster.add(Identity(name=a["name"], role=a["role"], public=bytes.fromhex(a["public"])),
                       now=now, enrolled_by=r.signer.name, ceremony_id=r.ceremony_id)
    for n in r.params.get("revoke", []):
        m = roster.get(n)
        if m is not None and m.revoked_at is None:
            roster.revoke(n, now=now)
    return {"enrolled": [a["name"] for a in r.params.get("add", [])],
            "revoked": list(r.params.get("revoke", [])), "approved_by": list(res.counted)}

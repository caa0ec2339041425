"""emergency-rotate's ``second-person`` step: nobody rotates the root in an emergency alone.

After the impact report (``incident``) and before the new root is generated, a second
person approves the rotation: a witness, or a super-admin who is not the coordinator. Their
signed approval is bound to this ceremony and to the action digest over the deployment,
the reason, the compromised roots and the new root version; it is recorded in ONE
``emergency-rotate`` event, and the transcript verifier checks it
(:mod:`ceremonies.transcript.authority`). Idempotent across interruptions like every gated
step (:mod:`.approvals`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ceremonies.engine.quorum import count_approvals
from ceremonies.runner.steps.approvals import (
    recognise,
    recorded_for,
    request_for,
    second_person_members,
    used_nonces,
)
from ceremonies.runner.steps.base import WAIT, on
from ceremonies.transcript.authority import SECOND_PERSON_ACTION
from custody.errors import PolicyError

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner, Inputs


def second_person_action(r: CeremonyRunner) -> tuple[str, dict[str, Any]]:
    """(action id, params) the second person approves."""
    f = r.state.facts
    return (
        f"emergency-rotate/v{f['root_version']}",
        {
            "deployment": r.dep.config.deployment_id,
            "reason": r.params["reason"],
            "compromised_roots": list(f.get("compromised_roots", [])),
            "to_root": f["root_version"],
        },
    )


@on("emergency-rotate", "second-person")
def second_person(r: CeremonyRunner, inputs: Inputs) -> Any:
    action_id, params = second_person_action(r)
    req = request_for(r, "second-person", SECOND_PERSON_ACTION, action_id, params)
    r.request = req.to_json()
    rec = recorded_for(r, SECOND_PERSON_ACTION, action_id, req.action_digest)
    if rec.seq is not None:  # recorded before an interruption: never record it again
        recognise(r, rec, inputs.approvals)
        return {"second_person": list(rec.approvers)}
    if not inputs.approvals:
        return WAIT
    now = r.clock()
    res = count_approvals(
        inputs.approvals,
        members=second_person_members(r, now),
        role="second-person",
        needed=1,
        ceremony_id=r.ceremony_id,
        action=SECOND_PERSON_ACTION,
        action_id=action_id,
        digest=req.action_digest,
        now=now,
        window=req.window,
        used_nonces=used_nonces(r),
    )
    if not res.met:
        raise PolicyError(
            f"emergency-rotate needs a second person: {res.describe()}",
            "A witness, or a super-admin other than the coordinator, signs the request "
            "('custody ceremony approve REQUEST --key ...'); then resume with --approval FILE.",
        )
    r.record(
        SECOND_PERSON_ACTION,
        {
            "action_id": action_id,
            "params": params,
            "action_digest": req.action_digest,
            "approvals": [a.to_json() for a in res.accepted[:1]],
        },
        step="second-person",
    )
    return {"second_person": list(res.counted[:1])}

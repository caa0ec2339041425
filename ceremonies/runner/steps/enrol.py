"""The enrol ceremony: add or revoke participants with a quorum.

Owns ``review`` (names are new, revocations exist) and ``enrol`` (the approvals handed in,
plus the coordinator's own when super-admins approve; waits when they are not a quorum,
then applies the roster change in the store). The quorum is the policy's ``enrol``
threshold, which the runner never sets below the trust model's
(:func:`ceremonies.runner.required_thresholds`): the coordinator alone only for the
bootstrap enrolment; after it two super-admins, or with a single super-admin a majority of
the custodians. An ``enrol`` action already recorded before an interruption is not
recorded again on resume (:mod:`.approvals`); the roster change is applied idempotently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ceremonies.engine.quorum import count_approvals, require_quorum
from ceremonies.participants import Identity
from ceremonies.roster import Roster
from ceremonies.runner.steps.approvals import recognise, recorded_for, request_for, used_nonces
from ceremonies.runner.steps.base import WAIT, on
from ceremonies.transcript.records import Approval
from custody.errors import UsageError

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner, Inputs
    from custody.deployment import Deployment


def _added(a: Mapping[str, Any]) -> dict[str, Any]:
    """What the enrol action (and so every approval of it) names of one added participant:
    name, role and fingerprint, and the key's algorithm when it is not Ed25519 (absent is
    Ed25519, as in every enrolment before ECDSA P-256 keys; those digests are unchanged)."""
    out = {k: a[k] for k in ("name", "role", "fingerprint")}
    if a.get("alg", "ed25519") != "ed25519":
        out["alg"] = a["alg"]
    return out


def check_roster_change(dep: Deployment, params: Mapping[str, Any]) -> None:
    """Refuse an enrolment that ``review`` would refuse (the runner also calls it before it
    records the ceremony): a name enrolled already, or added twice; a revocation of a name
    that is not enrolled.

    Raises:
        UsageError: which name, and why.
    """
    roster = Roster(dep.store)
    seen: set[str] = set()
    for a in params.get("add", []):
        if roster.get(a["name"]) is not None:
            raise UsageError(f"{a['name']} is already enrolled", "Revoke first, or rename.")
        if a["name"] in seen:
            raise UsageError(f"{a['name']} is added twice", "Give each participant once.")
        seen.add(a["name"])
    for n in params.get("revoke", []):
        if roster.get(n) is None:
            raise UsageError(f"{n} is not enrolled", "See 'custody participant list'.")


@on("enrol", "review")
def enrol_review(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    check_roster_change(r.dep, r.params)
    adds = r.params.get("add", [])
    return {
        "add": [_added(a) for a in adds],
        "revoke": list(r.params.get("revoke", [])),
    }


def enrol_action(r: CeremonyRunner) -> tuple[str, dict[str, Any]]:
    return (
        f"enrol/{r.ceremony_id[:8]}",
        {
            "add": [_added(a) for a in r.params.get("add", [])],
            "revoke": list(r.params.get("revoke", [])),
        },
    )


@on("enrol", "enrol")
def enrol_apply(r: CeremonyRunner, inputs: Inputs) -> Any:
    action_id, params = enrol_action(r)
    req = request_for(r, "enrol", "enrol", action_id, params)
    r.request = req.to_json()
    rec = recorded_for(r, "enrol", action_id, req.action_digest)
    now = r.clock()
    if rec.seq is not None:  # recorded before an interruption: apply, never record again
        recognise(r, rec, inputs.approvals)
        approved_by = list(rec.approvers)
        now = rec.time if rec.time is not None else now
    else:
        approvals = list(inputs.approvals)
        if req.role == "super-admin":  # the coordinator's own approval counts once
            mine = Approval.create(
                r.signer,
                ceremony_id=r.ceremony_id,
                action="enrol",
                action_id=action_id,
                digest=req.action_digest,
                now=now,
                window=req.window,
            )
            approvals = [mine, *approvals]
        members = {e.name: (e.role, e.alg, e.public, e.valid_at(now)) for e in r.rec.policy.roster}
        res = count_approvals(
            approvals,
            members=members,
            role=req.role,
            needed=req.needed,
            ceremony_id=r.ceremony_id,
            action="enrol",
            action_id=action_id,
            digest=req.action_digest,
            now=now,
            window=req.window,
            used_nonces=used_nonces(r),
        )
        if not res.met and not inputs.approvals:
            return WAIT
        require_quorum(res, action="enrol")
        r.rec.record_action(
            "enrol",
            "enrol",
            r.signer,
            action_id=action_id,
            params=params,
            approvals=res.accepted,
            now=now,
        )
        approved_by = list(res.counted)
    roster = Roster(r.dep.store)
    for a in r.params.get("add", []):
        if roster.get(a["name"]) is None:
            roster.add(
                Identity(
                    name=a["name"],
                    role=a["role"],
                    public=bytes.fromhex(a["public"]),
                    alg=a.get("alg", "ed25519"),
                ),
                now=now,
                enrolled_by=r.signer.name,
                ceremony_id=r.ceremony_id,
            )
    for n in r.params.get("revoke", []):
        m = roster.get(n)
        if m is not None and m.revoked_at is None:
            roster.revoke(n, now=now)
    return {
        "enrolled": [a["name"] for a in r.params.get("add", [])],
        "revoked": list(r.params.get("revoke", [])),
        "approved_by": approved_by,
    }

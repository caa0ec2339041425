"""Root rotation without the shares: rotate-root and emergency-rotate.

Owns rotate-root's ``approve`` (a custodian quorum of signed approvals bound to the
action digest), ``generate-root`` (the new root made and sealed inside the token to the
share set's RK-derived P-256 key, :mod:`ceremonies.runner.rkseal`, so the same shares still
recover it, then stored locked), ``seal-blob`` (the blob checked against the token's root
and the share set) and ``finalise``, and emergency-rotate's ``incident`` (impact report),
``disable-old``, ``revoke`` (grants and sessions) and ``report``. The shared root-key steps
(``hsm-check``, ``lock-root``, ``rewrap``) are in :mod:`ceremonies.runner.steps.rootkey`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import TYPE_CHECKING, Any

from ceremonies.engine.quorum import count_approvals, require_quorum
from ceremonies.roster import Roster
from ceremonies.runner import rkseal
from ceremonies.runner.steps.approvals import recognise, recorded_for, request_for, used_nonces
from ceremonies.runner.steps.base import WAIT, _hsm, _token_has, active_share_set, on
from ceremonies.runner.steps.rootkey import unrecorded_root
from custody.errors import CeremonyError, HsmError, IntegrityError
from custody.keys.hierarchy import ROOT_LABEL, KeyHierarchy
from custody.model import KeyState
from custody.store.rows import IncidentRow

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner, Inputs


def rotate_action(r: CeremonyRunner) -> tuple[str, dict[str, Any]]:
    f = r.state.facts
    return (
        f"rotate-root/v{f['root_version']}",
        {
            "deployment": r.dep.config.deployment_id,
            "from_root": f["old_root"],
            "to_root": f["root_version"],
        },
    )


@on("rotate-root", "approve")
def approve(r: CeremonyRunner, inputs: Inputs) -> Any:
    action_id, params = rotate_action(r)
    req = request_for(r, "approve", "rotate-root", action_id, params)
    r.request = req.to_json()
    rec = recorded_for(r, "rotate-root", action_id, req.action_digest)
    if rec.seq is not None:  # recorded before an interruption: never record it again
        recognise(r, rec, inputs.approvals)
        return {"approved_by": list(rec.approvers)}
    if not inputs.approvals:
        return WAIT
    members = {
        e.name: (e.role, e.alg, e.public, e.valid_at(r.clock())) for e in r.rec.policy.roster
    }
    res = count_approvals(
        inputs.approvals,
        members=members,
        role=req.role,
        needed=req.needed,
        ceremony_id=r.ceremony_id,
        action="rotate-root",
        action_id=action_id,
        digest=req.action_digest,
        now=r.clock(),
        window=req.window,
        used_nonces=used_nonces(r),
    )
    require_quorum(res, action="rotate-root")
    r.rec.record_action(
        "approve",
        "rotate-root",
        r.signer,
        action_id=action_id,
        params=params,
        approvals=res.accepted,
        now=r.clock(),
    )
    return {"approved_by": list(res.counted)}


@on("rotate-root emergency-rotate", "generate-root")
def generate_sealed_root(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    """The new root, sealed to the share set inside the token, in one step.

    The root is made as a volatile session object (extractable), sealed to the share set's
    RK-derived P-256 key inside the token (:func:`rkseal.seal_root`: ephemeral ECDH in the
    token, a non-extractable derived AES key, in-token round trip), the blob is saved, and
    the root is stored on the token non-extractable. It is extractable only inside this
    step and only as a session object: a crash drops it. No key material reaches the host:
    no one-time key, no ECDH secret, no root bytes, only the blob and the ephemeral public
    point.
    """
    v = r.state.facts["root_version"]
    sset = active_share_set(r.dep.store)
    if sset is None:
        raise CeremonyError(
            "This deployment has no active share set", "Run the generate ceremony first."
        )
    hsm = _hsm(r)
    ref = _token_has(r, ROOT_LABEL, v)
    if ref is not None:
        # resumed after a crash that followed the lock: keep it only if its blob was saved
        if ref.extractable or "blob" not in r.pending or r.pending.get("blob_kcv") != ref.kcv:
            raise unrecorded_root(v)
        return {"root_kcv": ref.kcv}
    rkseal.require_sealable(sset["rk_public"])
    r._save_pending(created_keys=[v])  # before the key exists: abort removes it
    hsm.generate_aes_key(ROOT_LABEL, v, extractable=True)  # a session object only
    try:
        blob, kcv = rkseal.seal_root(hsm, ROOT_LABEL, v, sset["rk_public"])
        r._save_pending(blob=blob.hex(), blob_kcv=kcv)
        hsm.set_non_extractable(ROOT_LABEL, v)  # the token copy is locked; session copy gone
    except BaseException:
        with contextlib.suppress(HsmError):  # the original error is the one to report
            left = _token_has(r, ROOT_LABEL, v)
            if left is not None and left.extractable:  # failed before the lock
                hsm.destroy_key(ROOT_LABEL, v)
        raise
    ref = hsm.find_key(ROOT_LABEL, v)
    if ref.extractable or ref.kcv != kcv:
        raise HsmError(f"root/v{v} was not stored locked", "Abort the ceremony.")
    return {"root_kcv": ref.kcv}


@on("rotate-root emergency-rotate", "seal-blob")
def seal_blob(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    """Check the blob generate-root saved: sealed to the active share set's key, for the
    root now on the token (its KCV), before finalise relies on it."""
    v = r.state.facts["root_version"]
    sset = active_share_set(r.dep.store)
    if sset is None:
        raise CeremonyError(
            "This deployment has no active share set", "Run the generate ceremony first."
        )
    if "blob" not in r.pending:
        raise CeremonyError(f"root/v{v} has no sealed blob", "Abort the ceremony.")
    blob = bytes.fromhex(r.pending["blob"])
    ref = _token_has(r, ROOT_LABEL, v)
    if (
        ref is None
        or ref.kcv != r.pending.get("blob_kcv")
        or ref.kcv != r.state.facts["root_kcv"]
        or rkseal.sealed_to(blob) != hashlib.sha256(sset["rk_public"]).hexdigest()
    ):
        raise IntegrityError(
            f"The sealed blob of root/v{v} does not belong to the root on the token",
            "Abort the ceremony; nothing was finalised.",
        )
    return {"blob_digest": hashlib.sha256(blob).hexdigest(), "sealed_to_epoch": sset["epoch"]}


@on("rotate-root emergency-rotate", "finalise")
def rotate_finalise(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    f = r.state.facts
    h = KeyHierarchy(r.dep.store, _hsm(r))
    if not any(x.version == f["root_version"] for x in h.roots()):
        h.record_root(
            f["root_version"],
            f["root_kcv"],
            blob=bytes.fromhex(r.pending["blob"]),
            epoch=f["epoch"],
            activate=True,
        )
    return {"active_root": f["root_version"], "old_root_state": "decrypt-only"}


# ------------------------------------------------------------------ emergency-rotate
@on("emergency-rotate", "incident")
def incident(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    h = KeyHierarchy(r.dep.store, _hsm(r))
    compromised = sorted(
        {x.version for x in h.roots() if x.state in (KeyState.ACTIVE, KeyState.DECRYPT_ONLY)}
    )
    keks: list[dict[str, Any]] = [
        {
            "kek": f"{k.branch}/v{k.version}",
            "state": k.state.value,
            "root": k.root_version,
            "objects": k.objects,
        }
        for k in h.keks()
        if k.root_version in compromised
    ]
    secrets = r.dep.store.count_objects("secrets")
    notify = [{"name": m.name, "role": m.role} for m in Roster(r.dep.store).active(now=r.clock())]
    report = {
        "ceremony_id": r.ceremony_id,
        "reason": r.params["reason"],
        "compromised_roots": compromised,
        "keks": keks,
        "wrapped_objects": sum(k["objects"] for k in keks),
        "secrets": secrets,
        "notify": notify,
    }
    r._save_pending(report=report)
    r.record(
        "incident.opened",
        {
            "reason": r.params["reason"],
            "compromised_roots": compromised,
            "notify": [n["name"] for n in notify],
        },
        step="incident",
        artifacts={"impact-report.json": json.dumps(report, sort_keys=True).encode()},
    )
    return {
        "compromised_roots": compromised,
        "kek_count": len(keks),
        "wrapped_objects": report["wrapped_objects"],
        "secrets": secrets,
    }


@on("emergency-rotate", "disable-old")
def disable_old(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    h = KeyHierarchy(r.dep.store, _hsm(r))
    out = []
    for v in r.state.facts["compromised_roots"]:
        x = next(x for x in h.roots() if x.version == v)
        if x.state is KeyState.DECRYPT_ONLY:
            h.set_root_state(v, KeyState.DISABLED)
        out.append(v)
    return {"disabled_roots": out}


@on("emergency-rotate", "revoke")
def revoke(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    return {"revoked": r.dep.store.revoke_access(now=r.clock())}


@on("emergency-rotate", "report")
def report(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    rep = dict(r.pending.get("report", {}))
    rep["new_root"] = r.state.facts["root_version"]
    rep["revoked"] = r.state.facts.get("revoked", {})
    out = r.dep.home.root / "incidents"
    out.mkdir(exist_ok=True)
    path = out / f"{r.ceremony_id}.json"
    path.write_text(json.dumps(rep, indent=2, sort_keys=True) + "\n")
    r.dep.store.put_incident(
        IncidentRow(
            id=r.ceremony_id,
            ceremony_id=r.ceremony_id,
            reason=r.params["reason"],
            created=r.clock(),
            report=json.dumps(rep, sort_keys=True),
        )
    )
    return {"report": r.dep.home.rel(path)}

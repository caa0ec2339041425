"""The recover ceremony: the root key back into a new or emptied token.

Owns recover's ``hsm-check`` (the token holds none of the roots to restore, and each has a
blob for the current share set), ``import-root`` (each blob unwrapped straight into the
HSM under the rebuilt RK, KCV checked), ``verify-keks`` and ``finalise``. Collecting and
combining the shares is :mod:`ceremonies.runner.steps.handin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ceremonies.runner import rkseal
from ceremonies.runner.steps.base import _hsm, _secret_lost, _token_has, active_share_set, on
from ceremonies.runner.steps.rootkey import _on_token, _verify_keks
from custody.errors import CeremonyError, IntegrityError, MechanismUnsupported, UsageError
from custody.keys.hierarchy import ROOT_LABEL, KeyHierarchy
from custody.model import KeyState

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner, Inputs
    from custody.deployment import Deployment


@on("recover", "hsm-check")
def recover_check(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    return recover_state(r.dep)


def recover_state(dep: Deployment) -> dict[str, Any]:
    """The token and the store are in the state a recover starts from: the ``hsm-check``
    facts. Reads only; the runner also calls it before it records the ceremony, so a
    recover refused here (the token already holds the root) leaves nothing behind.

    Raises:
        UsageError: the HSM is not open. CeremonyError: no share set; the token already
        holds a root to restore; a root has no blob for the current share set.
    """
    if dep.hsm is None:
        raise UsageError("This ceremony needs the HSM", "Provide the token PIN (--pin-file).")
    hsm = dep.hsm
    info = hsm.info()
    h = KeyHierarchy(dep.store, hsm)
    sset = active_share_set(dep.store)
    if sset is None:
        raise CeremonyError("No share set to recover from", "Nothing to recover.")
    wanted = {h.current_root().version} | {
        k.root_version for k in h.keks() if k.state is not KeyState.DESTROYED
    }
    roots = {x.version: x for x in h.roots()}
    present = [v for v in sorted(wanted) if _on_token(hsm, ROOT_LABEL, v) is not None]
    if present:
        raise CeremonyError(
            f"The token already holds root/v{present[0]}",
            "Recover into a new or emptied token; this one needs no recovery "
            "(see 'custody status').",
        )
    for v in wanted:
        if not roots[v].has_blob or roots[v].epoch != sset["epoch"]:
            raise CeremonyError(
                f"root/v{v} has no blob for the current share set",
                "It cannot be recovered with these shares.",
            )
    # Before any share is asked for: this token must open the blobs' key-wrap format.
    opens = hsm.unwrap_formats()
    for v in sorted(wanted):
        fmt = rkseal.wrap_format(h.root_blob(v))
        if fmt not in opens:
            raise MechanismUnsupported(
                f"This token cannot open the {fmt} blob of root/v{v}",
                "Recover into a token whose key unwrap passes the known-answer test for "
                f"{fmt} ('custody hsm selftest').",
            )
    return {
        "token": info.label,
        "token_serial": info.serial,
        "token_mechanisms": hsm.preflight(),  # what the known-answer tests chose (cached)
        "restore": sorted(wanted),
        "epoch": sset["epoch"],
    }


@on("recover", "import-root")
def import_root(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    h = KeyHierarchy(r.dep.store, _hsm(r))
    roots = {x.version: x for x in h.roots()}
    rk = r._secrets.get("rk")
    imported = []
    for v in r.state.facts["restore"]:
        ref = _token_has(r, ROOT_LABEL, v)
        if ref is None:
            if rk is None:
                raise _secret_lost(r, "import-root")
            key, blob = rkseal.open_blob(h.root_blob(v), rk, root_version=v)
            # recorded before the key exists, so that an abort destroys it
            r._save_pending(created_keys=sorted(set(r.pending.get("created_keys", [])) | {v}))
            ref = _hsm(r).import_wrapped(ROOT_LABEL, v, key, blob)
            imported.append(v)
        if ref.kcv != roots[v].kcv:
            raise IntegrityError(
                f"root/v{v} was restored with KCV {ref.kcv}, expected {roots[v].kcv}",
                "The blob or shares are wrong; abort.",
            )
    r._secrets.pop("rk", None)
    return {
        "imported": r.state.facts["restore"],
        "root_kcvs": {str(v): roots[v].kcv for v in r.state.facts["restore"]},
    }


@on("recover", "verify-keks")
def verify_keks(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    return _verify_keks(r)


@on("recover", "finalise")
def recover_finalise(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    r.dep.store.set_meta("last_recovery", r.ceremony_id)
    return {"recovered": True}

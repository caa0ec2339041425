"""Root-key steps shared by generate, reshare, rotate-root and emergency-rotate.

Owns ``hsm-check`` (the token is there, the deployment is in the state the kind expects,
the next root version), ``generate-root`` (generate and reshare: a new AES-256 root as a
volatile session object, extractable so that wrap-blob can wrap it under RK),
``lock-root`` (stored on the token non-extractable, PKCS#11 v3.0 CKA_EXTRACTABLE) and
``rewrap`` (every live KEK rewrapped under the new root, then a sample of wrapped objects
decrypted). The recover kind has its own ``hsm-check``
(:mod:`ceremonies.runner.steps.recover`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ceremonies.runner.steps.base import _hsm, _token_has, active_share_set, on
from ceremonies.runner.steps.issue import check_new_set
from custody.errors import CeremonyError, HsmError, IntegrityError, KeyNotFound, UsageError
from custody.keys.hierarchy import ROOT_LABEL, KeyHierarchy
from custody.model import KeyState

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner, Inputs
    from custody.deployment import Deployment


@on("generate reshare", "hsm-check")
@on("rotate-root emergency-rotate", "hsm-check")
def hsm_check(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    facts = token_state(r.dep, r.state.kind)
    if r.state.kind in ("generate", "reshare"):
        check_new_set(r.dep, r.params, now=r.clock())
    return facts


def token_state(dep: Deployment, kind: str) -> dict[str, Any]:
    """The token and the store are in the state a *kind* ceremony (generate, reshare,
    rotate-root, emergency-rotate) starts from: the ``hsm-check`` facts. Reads only; the
    runner also calls it before it records the ceremony (:func:`ceremonies.runner.steps.
    preflight`), so a ceremony refused here leaves nothing behind.

    Raises:
        UsageError: the HSM is not open. CeremonyError: generate on a deployment that has a
        share set or an active root; another kind without a share set. HsmError: the
        current root is not on the token, or the next root version already is.
    """
    if dep.hsm is None:
        raise UsageError("This ceremony needs the HSM", "Provide the token PIN (--pin-file).")
    hsm = dep.hsm
    info = hsm.info()
    h = KeyHierarchy(dep.store, hsm)
    sset = active_share_set(dep.store)
    if kind == "generate":
        if sset is not None:
            raise CeremonyError(
                "This deployment already has a share set",
                "Use 'custody ceremony reshare' to change custodians.",
            )
        if any(x.state is KeyState.ACTIVE for x in h.roots()):
            raise CeremonyError(
                "This deployment already has an active root key",
                "Use rotate-root or reshare instead of generate.",
            )
    elif sset is None:
        raise CeremonyError("This deployment has no share set", "Run the generate ceremony.")
    facts: dict[str, Any] = {
        "token": info.label,
        "token_serial": info.serial,
        "token_mechanisms": hsm.preflight(),  # what the known-answer tests chose (cached)
        "root_version": h.next_root_version(),
        "epoch": (sset["epoch"] + 1)
        if sset and kind == "reshare"
        else (sset["epoch"] if sset else 0),
    }
    check_fresh_root(dep, facts["root_version"])
    if kind != "generate":
        cur = h.current_root()
        facts["old_root"] = cur.version
        if _on_token(hsm, ROOT_LABEL, cur.version) is None:
            raise HsmError(
                f"root/v{cur.version} is not on the token",
                "Recover the root key first ('custody ceremony recover').",
            )
    return facts


def check_fresh_root(dep: Deployment, version: int) -> None:
    """Refuse a new root version that is already on the token (nothing records it).

    Raises:
        HsmError: root/v*version* is on the token (:func:`unrecorded_root`).
    """
    if dep.hsm is not None and _on_token(dep.hsm, ROOT_LABEL, version) is not None:
        raise unrecorded_root(version)


def _on_token(hsm: Any, label: str, version: int) -> Any:
    try:
        return hsm.find_key(label, version)
    except KeyNotFound:
        return None


@on("generate reshare", "generate-root")
def generate_root(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    """The new root as a *volatile* key: an extractable session object of this process's
    token login (``Hsm.generate_aes_key``), never an extractable token object. wrap-blob
    wraps it under RK and lock-root stores the non-extractable token copy; a crash before
    that drops it with the process, and resume refuses (``SecretLost``) as it does for RK.
    rotate-root and emergency-rotate do all of it in this one step
    (:mod:`ceremonies.runner.steps.rotation`)."""
    v = r.state.facts["root_version"]
    ref = _token_has(r, ROOT_LABEL, v)
    if ref is not None and r._secrets.get("root") != v:
        raise unrecorded_root(v)
    r._save_pending(created_keys=[v])
    if ref is None:
        ref = _hsm(r).generate_aes_key(ROOT_LABEL, v, extractable=True)
    r._secrets["root"] = v
    return {"root_kcv": ref.kcv}


def unrecorded_root(v: int) -> HsmError:
    """A root/vN on the token that no record and no step of this ceremony accounts for."""
    return HsmError(
        f"root/v{v} is already on the token, but nothing records it",
        "Another ceremony made it: abort that one ('custody ceremony abort ID'), "
        "or destroy the key if no ceremony is open.",
    )


@on("generate reshare rotate-root emergency-rotate", "lock-root")
def lock_root(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    v = r.state.facts["root_version"]
    ref = _token_has(r, ROOT_LABEL, v)
    if ref is None:
        raise HsmError(f"root/v{v} vanished from the token", "Abort the ceremony.")
    if ref.extractable:
        _hsm(r).set_non_extractable(ROOT_LABEL, v)
    r._secrets.pop("root", None)
    ref = _hsm(r).find_key(ROOT_LABEL, v)
    if ref.extractable or ref.kcv != r.state.facts["root_kcv"]:
        raise HsmError(f"root/v{v} on the token is not the root this ceremony made", "Abort.")
    return {"root_extractable": False}


def _verify_keks(r: CeremonyRunner, sample: int | None = 200) -> dict[str, Any]:
    h = KeyHierarchy(r.dep.store, _hsm(r))
    live = [k for k in h.keks() if k.state in (KeyState.ACTIVE, KeyState.DECRYPT_ONLY)]
    for k in live:
        h.kek_plaintext(k.branch, k.version)
    rep = h.verify_objects(sample=sample)
    h.forget_keys()
    if not rep.ok:
        raise IntegrityError(
            f"{len(rep.failed)} of {rep.checked} objects failed to decrypt",
            "Do not finalise; investigate.",
        )
    return {"keks_usable": len(live), "objects_checked": rep.checked}


@on("reshare rotate-root emergency-rotate", "rewrap")
def rewrap(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    v = r.state.facts["root_version"]
    h = KeyHierarchy(r.dep.store, _hsm(r))
    n = h.rewrap_keks(v)
    facts = _verify_keks(r, sample=100)
    return {"rewrapped": n, **facts}

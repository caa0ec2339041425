"""The drill: custodians prove their shares without touching the deployment's token.

Owns ``scratch-token`` (RK rebuilt from the shares opens the current root's blob into a
throw-away SoftHSM token, or on any other module into a session object of the deployment's
token), ``compare-kcv``, ``destroy-scratch`` and ``record`` (who passed,
per epoch), and :func:`drill_status`, the T+1 check the dashboard and ``custody ceremony
drill-status`` show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ceremonies.runner import rkseal
from ceremonies.runner.steps.base import _hsm, _secret_lost, active_share_set, on, quorum_size
from custody.errors import HsmError, IntegrityError
from custody.keys.hierarchy import KeyHierarchy

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner, Inputs

SCRATCH_PREFIX = "drill-"


@on("drill", "scratch-token")
def scratch_token(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    from ceremonies.runner.scratch import build_scratch

    rk = r._secrets.get("rk")
    if rk is None:
        raise _secret_lost(r, "scratch-token")
    cfg = r.dep.config
    h = KeyHierarchy(r.dep.store, None)
    cur = h.current_root()
    key, blob = rkseal.open_blob(h.root_blob(cur.version), rk, root_version=cur.version)
    if cfg.hsm.softhsm_conf is None:
        # Not the embedded SoftHSM: no scratch token can be made, so the root is rebuilt
        # from its blob into a short-lived session object of the deployment's own token
        # (ECB-only, destroyed at once; nothing is stored) and its KCV compared next.
        kcv = _hsm(r).check_wrapped(key, blob)
        r._secrets.pop("rk", None)
        return {"scratch": "session", "scratch_root_kcv": kcv, "root_version": cur.version}
    label = SCRATCH_PREFIX + r.ceremony_id[:8]
    r._save_pending(scratch=label)
    # A child process: this one may hold the deployment's token session, and SoftHSM only
    # sees tokens created before its C_Initialize (see ceremonies.runner.scratch).
    kcv = build_scratch(
        home=r.dep.home.root,
        module=cfg.hsm.module,
        softhsm_conf=cfg.hsm.softhsm_conf,
        label=label,
        root_version=cur.version,
        wrapping_key=key,
        blob=blob,
    )
    r._secrets.pop("rk", None)
    return {"scratch": label, "scratch_root_kcv": kcv, "root_version": cur.version}


@on("drill", "compare-kcv")
def compare_kcv(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    f = r.state.facts
    if f.get("scratch") is None:
        return {"kcv_match": True}
    h = KeyHierarchy(r.dep.store, None)
    want = next(x.kcv for x in h.roots() if x.version == f["root_version"])
    if want != f["scratch_root_kcv"]:
        raise IntegrityError(
            f"The drill rebuilt root/v{f['root_version']} with KCV "
            f"{f['scratch_root_kcv']}, expected {want}",
            "The blob or the shares are damaged; investigate now.",
        )
    return {"kcv_match": True, "root_kcv": want}


def _delete_scratch(r: CeremonyRunner) -> bool:
    from custody.hsm import softhsm

    label = r.pending.get("scratch")
    conf = r.dep.config.hsm.softhsm_conf
    if not label or conf is None:  # no scratch token, or not the embedded SoftHSM
        return False
    try:
        softhsm.delete_token(r.dep.home.root / conf, label)
    except HsmError:
        return False
    return True


@on("drill", "destroy-scratch")
def destroy_scratch(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    _delete_scratch(r)
    return {"scratch_destroyed": True}


def drill_status(store: Any, *, now: int, period_days: int) -> dict[str, Any]:
    """Who passed a drill of the active epoch within the period, and whether that is T+1."""
    sset = active_share_set(store)
    if sset is None:
        return {"ok": False, "passed": [], "needed": 0, "warning": "no share set"}
    since = now - period_days * 86400
    passed = sorted(store.drill_passers(sset["epoch"], since=since))
    needed = quorum_size(sset["scheme"]) + 1
    warn = None
    if len(passed) < needed:
        warn = (
            f"only {len(passed)} custodian(s) passed a drill in the last {period_days} days; "
            f"policy wants at least {needed} (T+1)"
        )
    return {"ok": warn is None, "passed": passed, "needed": needed, "warning": warn}


@on("drill", "record")
def drill_record(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    f = r.state.facts
    names = f.get("collect-shares.accepted", [])
    r.dep.store.record_drill(r.ceremony_id, names, epoch=f["epoch"], at=r.clock())
    st = drill_status(r.dep.store, now=r.clock(), period_days=r.dep.config.drill_period_days)
    if st["warning"]:
        r.messages.append("warning: " + st["warning"])
    return {
        "passed": names,
        "drill_status": {k: st[k] for k in ("passed", "needed", "ok")},
        "warning": st["warning"] or "",
    }

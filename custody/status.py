"""A deployment's status as plain data, for ``custody status`` and the TUI dashboard.

When the token is checked, its root keys are compared with the store (:func:`token_alarms`):
a live root the store needs but the token lacks, a root on the token the store does not
know, or a KCV that differs is an *alarm*, with the command that fixes it. ``custody status``
exits 6 (:data:`ALARM_EXIT`) when there is one; the dashboard shows it as an error.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from custody.clock import parse, utcnow
from custody.config import Home
from custody.deployment import open_deployment
from custody.errors import CustodyError, TokenNotPresent
from custody.keys.hierarchy import KeyHierarchy
from custody.model import CAN_DECRYPT, KeyState
from custody.store.rows import KekVersion, RootVersion

ALARM_EXIT = 6
"""``custody status``'s exit code when the token and the store disagree (IntegrityError's)."""

RECOVER_FIX = "custody ceremony recover"
LIVE = {s.value for s in CAN_DECRYPT}


def token_alarms(
    roots: list[RootVersion], keks: list[KekVersion], on_token: dict[int, str]
) -> list[dict[str, str]]:
    """Compare the root keys on the token (*on_token*: version -> KCV) with the store.

    A root the store needs (the active one, and any root a live KEK is sealed under) must
    be on the token with the stored KCV; a root on the token must be one the store knows.
    Each alarm is ``{"key", "problem", "text", "fix"}``: *fix* is the command (or the
    runbook section) that resolves it.
    """
    out: list[dict[str, str]] = []
    known = {r.version: r for r in roots}
    needed = {r.version for r in roots if r.state is KeyState.ACTIVE} | {
        k.root_version for k in keks if k.state is not KeyState.DESTROYED
    }
    for v in sorted(needed):
        r = known.get(v)
        name = f"root/v{v}"
        if r is None:
            continue
        if v not in on_token:
            if r.has_blob:
                fix = RECOVER_FIX
                text = f"{name} is not on this token: run `{fix}`"
            else:
                fix = "docs/recovery.md#lost-token"
                text = (
                    f"{name} is not on this token and has no recovery blob (a development "
                    "root): it cannot be recovered; see docs/recovery.md"
                )
            out.append({"key": name, "problem": "missing", "text": text, "fix": fix})
    for v, kcv in sorted(on_token.items()):
        name = f"root/v{v}"
        r = known.get(v)
        if r is None:
            fix = "custody store restore FILE"
            out.append(
                {
                    "key": name,
                    "problem": "unknown",
                    "text": f"{name} is on this token but not in the store: the store is older "
                    f"than the token or belongs to another deployment; restore the latest "
                    f"snapshot (`{fix}`) or import the offline export (`custody root import "
                    "DIR`)",
                    "fix": fix,
                }
            )
        elif r.state in CAN_DECRYPT and kcv != r.kcv:
            fix = "docs/recovery.md#suspected-compromise"
            out.append(
                {
                    "key": name,
                    "problem": "kcv-mismatch",
                    "text": f"{name} on this token has KCV {kcv}, the store expects {r.kcv}: "
                    "this is not the deployment's key; stop using the token and follow "
                    "docs/recovery.md (suspected compromise)",
                    "fix": fix,
                }
            )
    return out


def _age_days(created: str, now: datetime) -> int:
    return (now - parse(created)).days


def _export_state(marker: str | None, st: dict[str, Any]) -> dict[str, Any] | None:
    """How the last ``custody root export`` compares with the live roots and KEKs (None when
    there is nothing to export: no root with a recovery blob)."""
    live = {
        *(f"root/v{r['version']}" for r in st["roots"] if r["state"] in LIVE and r["has_blob"]),
        *(f"{k['branch']}/v{k['version']}" for k in st["keks"] if k["state"] in LIVE),
    }
    if not any(k.startswith("root/") for k in live):
        return None
    if marker is None:
        return {"at": None, "current": False, "missing": sorted(live)}
    try:
        doc = json.loads(marker)
        done = set(doc["keys"])
    except (ValueError, KeyError, TypeError):
        return {"at": None, "current": False, "missing": sorted(live)}
    missing = sorted(live - done)
    return {"at": doc.get("at"), "current": not missing, "missing": missing}


def deployment_status(
    home: Home, pin: str | None, *, now: datetime | None = None
) -> dict[str, Any]:
    """Collect the status of *home*. The token is logged in to only when *pin* is given.

    Raises:
        ConfigError: no deployment. StorageError: the store cannot be read.
        (HSM failures are reported in the result, not raised.)
    """
    dep = open_deployment(home)
    now = now or utcnow()
    out: dict[str, Any] = {
        "home": str(home.root),
        "deployment_id": dep.config.deployment_id,
        "hsm": {
            "module": dep.config.hsm.module,
            "token_label": dep.config.hsm.token_label,
            "slot": dep.config.hsm.slot,
            "embedded": dep.config.hsm.embedded,
            "reachable": None,
        },
        "dev_root": dep.store.get_meta("dev_root") == "1",
    }
    token_roots: dict[int, str] = {}
    try:
        if pin is None:
            out["hsm"]["note"] = "no PIN given; token not checked"
        else:
            try:
                hsm = dep.login(pin)
            except CustodyError as err:
                hint = err.hint
                if isinstance(err, TokenNotPresent) and dep.config.hsm.embedded:
                    hint = (
                        "The embedded token is gone: run `custody hsm provision`, then "
                        "`custody ceremony recover` (docs/recovery.md, lost token)."
                    )
                out["hsm"].update(reachable=False, error=err.title, hint=hint)
            else:
                try:
                    info = hsm.info()
                    out["hsm"]["token"] = {
                        "manufacturer": info.manufacturer,
                        "model": info.model,
                        "serial": info.serial,
                        "slot_id": info.slot_id,
                    }
                    token_roots = {k.version: k.kcv for k in hsm.list_keys("root")}
                    out["hsm"]["root_keys_on_token"] = [f"root/v{v}" for v in sorted(token_roots)]
                    out["hsm"]["reachable"] = True
                except CustodyError as err:
                    out["hsm"].update(reachable=False, error=err.title, hint=err.hint)
                finally:
                    dep.hsm = None
                    hsm.close()
        h = KeyHierarchy(dep.store, None)
        out["alarms"] = (
            token_alarms(h.roots(), h.keks(), token_roots) if out["hsm"]["reachable"] else []
        )
        out["roots"] = [
            {
                "version": r.version,
                "state": r.state.value,
                "kcv": r.kcv,
                "epoch": r.epoch,
                "has_blob": r.has_blob,
                "created": r.created,
                "age_days": _age_days(r.created, now),
            }
            for r in h.roots()
        ]
        out["keks"] = [
            {
                "branch": k.branch,
                "version": k.version,
                "state": k.state.value,
                "kcv": k.kcv,
                "root_version": k.root_version,
                "created": k.created,
                "age_days": _age_days(k.created, now),
                "objects": k.objects,
            }
            for k in h.keks()
        ]
        out["objects"] = h.object_counts()
        out["offline_export"] = _export_state(dep.store.get_meta("root_export"), out)
    finally:
        dep.close()
    return out

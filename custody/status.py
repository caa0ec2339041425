"""A deployment's status as plain data, for ``custody status`` and the TUI dashboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from custody.clock import parse, utcnow
from custody.config import Home
from custody.deployment import open_deployment
from custody.errors import CustodyError
from custody.keys.hierarchy import KeyHierarchy


def _age_days(created: str, now: datetime) -> int:
    return (now - parse(created)).days


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
    try:
        if pin is None:
            out["hsm"]["note"] = "no PIN given; token not checked"
        else:
            try:
                hsm = dep.login(pin)
            except CustodyError as err:
                out["hsm"].update(reachable=False, error=err.title, hint=err.hint)
            else:
                try:
                    info = hsm.info()
                    out["hsm"]["token"] = {
                        "manufacturer": info.manufacturer,
                        "model": info.model,
                        "serial": info.serial,
                        "slot_id": info.slot_id,
                    }
                    out["hsm"]["root_keys_on_token"] = sorted(
                        f"{k.label}/v{k.version}" for k in hsm.list_keys("root")
                    )
                    out["hsm"]["reachable"] = True
                except CustodyError as err:
                    out["hsm"].update(reachable=False, error=err.title, hint=err.hint)
                finally:
                    dep.hsm = None
                    hsm.close()
        h = KeyHierarchy(dep.store, None)
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
    finally:
        dep.close()
    return out

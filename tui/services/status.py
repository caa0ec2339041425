"""Dashboard and inventory view models: token, root and KEK versions, rotations,
custodians with their last drill, and the alerts derived from them.

Pure functions over :func:`custody.status.deployment_status` output and the store, so
the dashboard can be tested with fixed data. Drill freshness follows one rule everywhere
(:func:`custodian_rows` and :func:`drill_alerts`): only drills of the active share-set
epoch count, as in :func:`ceremonies.runner.steps.drill_status`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from custody import clock
from tui.services.common import Field, _date


@dataclass(frozen=True, slots=True, kw_only=True)
class HsmView:
    state: str  # "ok" | "alarm" (reachable, but it does not match the store) | ...
    token_label: str
    module: str
    embedded: bool
    detail: str = ""
    hint: str = ""
    token: tuple[Field, ...] = ()
    root_keys_on_token: tuple[str, ...] = ()
    # custody.status.token_alarms: (text, fix) per root the token and the store disagree on
    alarms: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRow:
    """One key version (root or KEK) for the dashboard and the inventory."""

    name: str  # "root/v1", "data/v2"
    branch: str  # "root" for root versions
    version: int
    key_class: str  # policy class: high/medium/low, or "-" for roots
    state: str
    kcv: str
    created: str
    age_days: int
    objects: int
    due: str = ""  # ISO date, only for the current (active) KEK of a branch
    days_left: int | None = None
    extra: tuple[Field, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RotationRow:
    key: str
    key_class: str
    period_days: int
    last_rotation: str
    due: str
    days_left: int
    status: str  # overdue | due | upcoming | ok


@dataclass(frozen=True, slots=True, kw_only=True)
class CustodianRow:
    name: str
    role: str
    last_drill: str  # ISO date (active epoch), "never", or RETIRED_ONLY
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    level: str  # error | warning | info
    text: str
    hint: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DashboardView:
    deployment_id: str
    home: str
    now: str
    hsm: HsmView
    roots: tuple[KeyRow, ...]
    keks: tuple[KeyRow, ...]
    rotations: tuple[RotationRow, ...]
    custodians: tuple[CustodianRow, ...] | None  # None: no roster yet
    alerts: tuple[Alert, ...]
    objects: tuple[tuple[str, int], ...]
    dev_root: bool = False

    @property
    def current_root(self) -> KeyRow | None:
        active = [r for r in self.roots if r.state == "active"]
        return active[-1] if active else None


def _age_days(created: str, now: datetime) -> int:
    return (now - clock.parse(created)).days


def rotation_rows(
    keks: Sequence[KeyRow], roots: Sequence[KeyRow], branches: dict[str, Any], now: datetime
) -> tuple[RotationRow, ...]:
    """Rotations per KEK branch and the root, evaluated by :mod:`custody.policy`."""
    from custody import policy

    ages = []
    current = {k.branch: k for k in (*roots, *keks) if k.state == "active"}
    for key in (*sorted(branches), "root"):
        k = current.get(key)
        ages.append(
            policy.KeyAge(
                key=key,
                version=k.version if k else None,
                created=clock.parse(k.created) if k else None,
            )
        )
    rows = []
    for item in policy.evaluate(ages, branches, now):
        rows.append(
            RotationRow(
                key=f"{item.key}/v{item.version}" if item.version is not None else f"{item.key}/-",
                key_class=item.key_class,
                period_days=item.period_days,
                last_rotation=_date(item.created.isoformat()) if item.created else "never",
                due=_date(item.due_at.isoformat()) if item.due_at else "now",
                days_left=item.days_left if item.days_left is not None else 0,
                status=item.status,
            )
        )
    return tuple(rows)


def alerts_for(
    view_hsm: HsmView,
    rotations: Sequence[RotationRow],
    keks: Sequence[KeyRow],
    roots: Sequence[KeyRow],
    dev_root: bool,
    custodians: Any,
) -> tuple[Alert, ...]:
    out: list[Alert] = [
        Alert(level="error", text=text, hint=f"Fix: {fix} (see docs/recovery.md).")
        for text, fix in view_hsm.alarms
    ]
    if view_hsm.state == "unreachable":
        out.append(
            Alert(level="error", text=f"Token unreachable: {view_hsm.detail}", hint=view_hsm.hint)
        )
    elif view_hsm.state == "not checked":
        out.append(
            Alert(
                level="info",
                text="Token not checked: no PIN given",
                hint="Press p to enter the token PIN.",
            )
        )
    if not roots:
        out.append(
            Alert(level="warning", text="No root key yet", hint="Run the generate ceremony.")
        )
    if dev_root:
        out.append(
            Alert(
                level="warning",
                text="Development root key: no recovery shares",
                hint="Run the generate ceremony before storing real data.",
            )
        )
    for r in rotations:
        if r.status == "overdue":
            out.append(
                Alert(
                    level="error",
                    text=f"{r.key} rotation overdue by {-r.days_left}d",
                    hint="Rotate the KEK (custody kek rotate), then re-key.",
                )
            )
        elif r.status == "missing":
            what = r.key.split("/")[0]
            out.append(
                Alert(
                    level="warning",
                    text=f"No active key yet for {what}",
                    hint="Create one with custody kek rotate."
                    if what != "root"
                    else "Run the generate ceremony.",
                )
            )
        elif r.status == "due":
            out.append(
                Alert(
                    level="warning",
                    text=f"{r.key} rotation due today",
                    hint="Rotate it now (custody kek rotate, or the rotate-root ceremony).",
                )
            )
        elif r.status == "upcoming":
            out.append(
                Alert(
                    level="warning",
                    text=f"{r.key} rotation due in {r.days_left}d",
                    hint="Plan the rotation.",
                )
            )
    for k in keks:
        if k.state != "active" and k.objects:
            out.append(
                Alert(
                    level="warning",
                    text=f"{k.name} ({k.state}) still wraps {k.objects} objects",
                    hint="Run custody rekey run to move them to the current version.",
                )
            )
    if custodians is None:
        out.append(
            Alert(
                level="info",
                text="No custodian roster yet",
                hint="Custodians appear after the generate ceremony.",
            )
        )
    return tuple(out)


def _kek_rows(st: dict[str, Any], branches: dict[str, Any], now: datetime) -> tuple[KeyRow, ...]:
    rows = []
    for k in st.get("keks", []):
        bp = branches.get(k["branch"])
        due, left = "", None
        if bp is not None and k["state"] == "active":
            d = clock.parse(k["created"]) + timedelta(days=bp.period_days)
            due, left = _date(d.isoformat()), (d - now).days
        rows.append(
            KeyRow(
                name=f"{k['branch']}/v{k['version']}",
                branch=k["branch"],
                version=k["version"],
                key_class=bp.key_class if bp else "-",
                state=k["state"],
                kcv=k["kcv"],
                created=k["created"],
                age_days=_age_days(k["created"], now),
                objects=k["objects"],
                due=due,
                days_left=left,
                extra=(Field(label="wrapped under", value=f"root/v{k['root_version']}"),),
            )
        )
    return tuple(rows)


def _root_rows(st: dict[str, Any], now: datetime) -> tuple[KeyRow, ...]:
    return tuple(
        KeyRow(
            name=f"root/v{r['version']}",
            branch="root",
            version=r["version"],
            key_class="-",
            state=r["state"],
            kcv=r["kcv"],
            created=r["created"],
            age_days=_age_days(r["created"], now),
            objects=0,
            extra=(
                Field(
                    label="epoch",
                    value=str(r["epoch"]) if r["epoch"] is not None else "none (dev root)",
                ),
                Field(label="recovery blob", value="stored" if r["has_blob"] else "none"),
            ),
        )
        for r in st.get("roots", [])
    )


def _hsm_view(st: dict[str, Any]) -> HsmView:
    h = st["hsm"]
    state = {True: "ok", False: "unreachable", None: "not checked"}[h.get("reachable")]
    alarms = tuple((a["text"], a["fix"]) for a in st.get("alarms", ()))
    if state == "ok" and alarms:
        state = "alarm"
    tok = h.get("token") or {}
    return HsmView(
        state=state,
        token_label=h["token_label"],
        module=h["module"],
        embedded=h["embedded"],
        detail=h.get("error") or h.get("note", "") or (alarms[0][0] if alarms else ""),
        hint=h.get("hint", ""),
        token=tuple(Field(label=k, value=str(v)) for k, v in tok.items()),
        root_keys_on_token=tuple(h.get("root_keys_on_token", ())),
        alarms=alarms,
    )


RETIRED_ONLY = "drilled on retired shares"


def _open_store(db_path: Path) -> Any:
    """The store of the home around *db_path* (its PostgreSQL store when the config names
    one), or the SQLite file itself when there is no config beside it (a copied store)."""
    from custody.config import Home
    from custody.deployment import open_home_store
    from custody.store import open_store

    home = Home(db_path.parent)
    return open_home_store(home) if home.exists() else open_store(db_path)


def custodian_rows(db_path: Path, cfg: Any, now: datetime) -> tuple[CustodianRow, ...] | None:
    """Enrolled custodians with their last passed drill of the *active* share-set epoch.

    The rule is :func:`ceremonies.runner.steps.drill_status`'s (which raises the T+1
    alert): a drill counts only on the current shares, within ``drill_period_days``. A
    custodian whose only drills were on a retired epoch shows :data:`RETIRED_ONLY`: that
    drill proves nothing about the share they hold now.

    Returns None while nobody is enrolled ("no roster yet").
    """
    from ceremonies.roster import Roster
    from ceremonies.runner.steps import active_share_set

    store = _open_store(db_path)
    try:
        ts = clock.to_seconds(now)
        members = [m for m in Roster(store).members(include_revoked=False) if m.role == "custodian"]
        if not members:
            return None
        sset = active_share_set(store)
        epoch = int(sset["epoch"]) if sset is not None else None
        rows = []
        for m in members:
            at = store.last_drill(m.name, epoch)
            if at is None:
                old = store.has_drilled(m.name)
                rows.append(
                    CustodianRow(
                        name=m.name,
                        role="custodian",
                        last_drill=RETIRED_ONLY if old else "never",
                        status="drill due",
                    )
                )
                continue
            fresh = ts - at <= cfg.drill_period_days * 86400  # drill_status: passed_at >= since
            rows.append(
                CustodianRow(
                    name=m.name,
                    role="custodian",
                    last_drill=clock.from_seconds(at).date().isoformat(),
                    status="ok" if fresh else "drill due",
                )
            )
        return tuple(rows)
    finally:
        store.close()


def drill_alerts(
    db_path: Path, cfg: Any, now: datetime, custodians: tuple[CustodianRow, ...] | None
) -> tuple[Alert, ...]:
    """A warning when fewer than T+1 custodians passed a drill of the active share set
    within the policy period (:func:`ceremonies.runner.steps.drill_status`)."""
    if custodians is None:
        return ()
    from ceremonies.runner.steps import drill_status

    store = _open_store(db_path)
    try:
        st = drill_status(store, now=clock.to_seconds(now), period_days=cfg.drill_period_days)
    finally:
        store.close()
    if st["ok"] or st.get("needed", 0) == 0:
        return ()
    return (
        Alert(
            level="warning",
            text=f"Drills: {len(st['passed'])} of {st['needed']} (T+1) custodians passed "
            f"in the last {cfg.drill_period_days} days",
            hint=f"{st['warning']}. Passed: {', '.join(st['passed']) or 'nobody'}. "
            "Run the drill ceremony with the others.",
        ),
    )

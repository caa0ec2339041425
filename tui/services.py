"""The TUI's thin services layer: every read of the disk or the HSM goes through here.

Screens never touch the store, the token or a file. They call a :class:`Services`
object from a thread worker and get back plain, frozen view models (``DashboardView``,
``KeyRow``, ``AuditView`` ...). That keeps the screens testable with fixed data (the
snapshot tests inject :class:`StaticServices`), and keeps blocking work off the UI thread.

Secrets: the token PIN comes from ``--pin-file``, ``CUSTODY_PIN`` or the PIN modal. It is
held by :class:`_PinBox` (masked ``repr``), never on a reactive, never in a view model.
Every failure a user can meet is a :class:`~custody.errors.CustodyError` (title + hint),
which the app shows in its one error modal.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from custody.errors import ConfigError, CustodyError, UsageError

if TYPE_CHECKING:
    from custody.audit.log import AuditLog
    from custody.config import Config, Home

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """How the app was started. Tests pin ``clock`` and set ``deterministic``.

    ``deterministic`` turns off cursor blink and animations (snapshot tests).
    ``paint_marker``: a file that receives ``time.monotonic()`` at first paint and when
    the dashboard data has loaded (the start-up bench); ``exit_after_paint`` then quits.
    """

    home: Path
    pin_file: Path | None = None
    clock: Clock = utcnow
    theme: str = "textual-dark"
    deterministic: bool = False
    paint_marker: Path | None = None
    exit_after_paint: bool = False

    @classmethod
    def from_env(cls, home: Path, pin_file: Path | None) -> Settings:
        marker = os.environ.get("CUSTODY_TUI_PAINT_MARKER")
        return cls(
            home=home,
            pin_file=pin_file,
            theme=os.environ.get("CUSTODY_TUI_THEME", "textual-dark"),
            paint_marker=Path(marker) if marker else None,
            exit_after_paint=os.environ.get("CUSTODY_TUI_EXIT_AFTER_PAINT") == "1",
        )


# --------------------------------------------------------------------------- view models


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    """One labelled value of a detail view."""

    label: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HsmView:
    state: str  # "ok" | "unreachable" | "not checked"
    token_label: str
    module: str
    embedded: bool
    detail: str = ""
    hint: str = ""
    token: tuple[Field, ...] = ()
    root_keys_on_token: tuple[str, ...] = ()


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
    last_drill: str  # ISO date or "never"
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


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckRow:
    id: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRow:
    seq: int
    time: str
    step: str
    kind: str
    actor: str
    body: str  # canonical JSON of the event's body (never secret: see transcript guard)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditView:
    """The outcome of verifying one transcript bundle against pinned trust keys."""

    bundle: str
    trust_keys: tuple[str, ...]
    ok: bool
    checks: tuple[CheckRow, ...]
    quorums: tuple[str, ...]
    events: tuple[EventRow, ...]
    ceremony_id: str = ""

    def to_report(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "ceremony_id": self.ceremony_id,
            "trust_keys": list(self.trust_keys),
            "ok": self.ok,
            "checks": [{"id": c.id, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "quorums": list(self.quorums),
        }


class Services(Protocol):
    """What the screens may ask for. Every method may block; call it from a worker."""

    settings: Settings

    def has_pin(self) -> bool: ...
    def login(self, pin: str) -> None: ...
    def dashboard(self) -> DashboardView: ...
    def inventory(self) -> tuple[KeyRow, ...]: ...
    def verify_bundle(self, bundle: str, trust_keys: Sequence[str]) -> AuditView: ...
    def export_report(self, view: AuditView, path: str) -> Path: ...
    def audit_tail(self, start: int) -> AuditTail: ...
    def audit_proof(self, seq: int, trust_keys: Sequence[str]) -> ProofView: ...
    def export_proof(self, proof: ProofView, path: str) -> Path: ...
    def rekey_view(self) -> RekeyView: ...
    def rekey_jobs(self) -> tuple[JobView, ...]: ...
    def rekey_plan(self, branch: str | None, due: bool = False) -> PlanView: ...
    def rekey_run(
        self, branch: str | None, due: bool, batch: int, progress: Callable[[int], None]
    ) -> RunView: ...
    def cancel_destroy(self, branch: str, version: int) -> str: ...


# --------------------------------------------------------------------------- helpers


class _PinBox:
    """Holds the token PIN for this process. Never printed, never on a reactive."""

    __slots__ = ("_lock", "_pin")

    def __init__(self) -> None:
        self._pin: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "_PinBox(<set>)" if self._pin is not None else "_PinBox(<empty>)"

    def get(self) -> str | None:
        with self._lock:
            return self._pin

    def set(self, pin: str | None) -> None:
        with self._lock:
            self._pin = pin


def _date(iso: str) -> str:
    return iso[:10] if iso else ""


def _age_days(created: str, now: datetime) -> int:
    return (now - datetime.fromisoformat(created)).days


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
                created=datetime.fromisoformat(k.created) if k else None,
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
    out: list[Alert] = []
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
            d = datetime.fromisoformat(k["created"]) + timedelta(days=bp.period_days)
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
    tok = h.get("token") or {}
    return HsmView(
        state=state,
        token_label=h["token_label"],
        module=h["module"],
        embedded=h["embedded"],
        detail=h.get("error") or h.get("note", ""),
        hint=h.get("hint", ""),
        token=tuple(Field(label=k, value=str(v)) for k, v in tok.items()),
        root_keys_on_token=tuple(h.get("root_keys_on_token", ())),
    )


# --------------------------------------------------------------------------- real services


class HomeServices:
    """Services over a real custody home (SQLite store + PKCS#11 token)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pin = _PinBox()
        self._pin_loaded = False

    def __repr__(self) -> str:
        return f"HomeServices(home={str(self.settings.home)!r})"

    def _home(self) -> Home:
        from custody.config import Home

        return Home(self.settings.home)

    def _load_pin(self) -> str | None:
        if not self._pin_loaded:
            from custody.secretsource import read_secret

            self._pin_loaded = True
            if self.settings.pin_file is not None or os.environ.get("CUSTODY_PIN"):
                self._pin.set(
                    read_secret(
                        what="token user PIN",
                        file=self.settings.pin_file,
                        file_key="pin",
                        env="CUSTODY_PIN",
                        prompt=False,
                    )
                )
        return self._pin.get()

    def has_pin(self) -> bool:
        try:
            return self._load_pin() is not None
        except CustodyError:
            return False

    def login(self, pin: str) -> None:
        """Check *pin* against the token, and keep it for this session only if it works.

        Raises:
            ConfigError: no deployment. HsmError: wrong/locked PIN or token unavailable.
            UsageError: an empty PIN.
        """
        if not pin:
            raise UsageError("No PIN entered", "Type the token user PIN, or press Escape.")
        from custody.deployment import open_hsm

        home = self._home()
        hsm = open_hsm(home, home.load(), pin)
        hsm.close()
        self._pin.set(pin)
        self._pin_loaded = True

    def _status(self) -> dict[str, Any]:
        from custody.status import deployment_status

        home = self._home()
        now = self.settings.clock()
        pin = None
        pin_error: CustodyError | None = None
        try:
            pin = self._load_pin()
        except CustodyError as err:
            pin_error = err
        try:
            st = deployment_status(home, pin, now=now)
        except ConfigError:
            raise
        except CustodyError as err:
            if pin is None:
                raise
            # The token failed part-way; show the store's view, and the token as unreachable.
            st = deployment_status(home, None, now=now)
            st["hsm"].update(reachable=False, error=err.title, hint=err.hint)
        if pin_error is not None:
            st["hsm"].update(reachable=False, error=pin_error.title, hint=pin_error.hint)
        return st

    def _config(self) -> Config:
        return self._home().load()

    def dashboard(self) -> DashboardView:
        """Gather everything the dashboard shows.

        Raises:
            ConfigError: no deployment at the home. StorageError: the store cannot be read.
        """
        st = self._status()
        now = self.settings.clock()
        cfg = self._config()
        keks = _kek_rows(st, cfg.branches, now)
        roots = _root_rows(st, now)
        rotations = rotation_rows(keks, roots, cfg.branches, now)
        hsm = _hsm_view(st)
        custodians = self._custodians(cfg, now)
        return DashboardView(
            deployment_id=st["deployment_id"],
            home=st["home"],
            now=now.isoformat(timespec="seconds"),
            hsm=hsm,
            roots=roots,
            keks=keks,
            rotations=rotations,
            custodians=custodians,
            alerts=alerts_for(hsm, rotations, keks, roots, st.get("dev_root", False), custodians)
            + self._drill_alerts(cfg, now, custodians),
            objects=tuple(sorted(st.get("objects", {}).items())),
            dev_root=st.get("dev_root", False),
        )

    def _custodians(self, cfg: Any, now: datetime) -> tuple[CustodianRow, ...] | None:
        """Enrolled custodians with their last passed drill (roster + drills tables).

        Returns None while nobody is enrolled ("no roster yet").
        """
        from ceremonies.participants import Roster
        from custody.store import Store

        store = Store.open(self._home().db_path)
        try:
            ts = int(now.timestamp())
            members = [
                m for m in Roster(store).members(include_revoked=False) if m.role == "custodian"
            ]
            if not members:
                return None
            rows = []
            for m in members:
                last = store.query("SELECT MAX(passed_at) FROM drills WHERE custodian=?", (m.name,))
                at = last[0][0] if last and last[0][0] is not None else None
                if at is None:
                    rows.append(
                        CustodianRow(
                            name=m.name, role="custodian", last_drill="never", status="drill due"
                        )
                    )
                    continue
                fresh = ts - at <= cfg.drill_period_days * 86400
                rows.append(
                    CustodianRow(
                        name=m.name,
                        role="custodian",
                        last_drill=datetime.fromtimestamp(at, UTC).date().isoformat(),
                        status="ok" if fresh else "drill due",
                    )
                )
            return tuple(rows)
        finally:
            store.close()

    def _drill_alerts(
        self, cfg: Any, now: datetime, custodians: tuple[CustodianRow, ...] | None
    ) -> tuple[Alert, ...]:
        """A warning when fewer than T+1 custodians passed a drill of the active share set
        within the policy period (:func:`ceremonies.runner.steps.drill_status`)."""
        if custodians is None:
            return ()
        from ceremonies.runner.steps import drill_status
        from custody.store import Store

        store = Store.open(self._home().db_path)
        try:
            st = drill_status(store, now=int(now.timestamp()), period_days=cfg.drill_period_days)
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

    def inventory(self) -> tuple[KeyRow, ...]:
        d = self.dashboard()
        return d.roots + d.keks

    def verify_bundle(self, bundle: str, trust_keys: Sequence[str]) -> AuditView:
        return verify_bundle_view(bundle, trust_keys)

    def export_report(self, view: AuditView, path: str) -> Path:
        return export_report(view, path)

    # -- audit log and re-key (module functions below; the PIN stays in the _PinBox) -----

    def audit_tail(self, start: int) -> AuditTail:
        return audit_tail(self.settings.home, start)

    def audit_proof(self, seq: int, trust_keys: Sequence[str]) -> ProofView:
        return audit_proof(self.settings.home, seq, trust_keys)

    def export_proof(self, proof: ProofView, path: str) -> Path:
        return export_proof(proof, path)

    def rekey_view(self) -> RekeyView:
        return rekey_view(self.settings.home, self.settings.clock())

    def rekey_jobs(self) -> tuple[JobView, ...]:
        return rekey_jobs(self.settings.home)

    def rekey_plan(self, branch: str | None, due: bool = False) -> PlanView:
        return rekey_plan(self.settings.home, self.settings.clock(), branch, due)

    def rekey_run(
        self, branch: str | None, due: bool, batch: int, progress: Callable[[int], None]
    ) -> RunView:
        """Raises: UsageError when no PIN is known (log in first), and see :func:`rekey_run`."""
        pin = self._load_pin()
        if pin is None:
            raise UsageError("No token PIN", "Log in first (the re-key screen asks for the PIN).")
        return rekey_run(self.settings.home, pin, branch, due, batch, progress)

    def cancel_destroy(self, branch: str, version: int) -> str:
        return cancel_destroy(self.settings.home, branch, version, self.settings.clock())


def verify_bundle_view(bundle: str, trust_keys: Sequence[str]) -> AuditView:
    """Verify *bundle* offline against the pinned *trust_keys* files.

    Raises:
        UsageError: no bundle or no trust key given. ConfigError: the verifier is not
        available. TranscriptError: the bundle cannot be read at all.
    """
    if not bundle:
        raise UsageError("No bundle given", "Type the path of a transcript bundle.")
    if not trust_keys:
        raise UsageError(
            "No trust key pinned",
            "Pin at least one public key file you obtained yourself (never from the bundle).",
        )
    from ceremonies.transcript import load_bundle, parse_trust_key, verify_bundle
    from ceremonies.transcript.checks import parse

    keys = []
    for path in trust_keys:
        p = Path(path).expanduser()
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"Cannot read trust key {p}", "Check the path you pinned.") from exc
        keys.append(parse_trust_key(raw, default_name=p.stem))
    data = load_bundle(Path(bundle).expanduser())
    report = verify_bundle(data, keys)
    events = tuple(
        EventRow(
            seq=e.seq,
            time=_event_time(e.time),
            step=e.step,
            kind=e.kind,
            actor=e.actor,
            body=json.dumps(dict(e.body), sort_keys=True, default=str),
        )
        for e in parse(data).events
        if e is not None
    )
    quorum = next((r for r in report.results if r.id == "quorum"), None)
    return AuditView(
        bundle=bundle,
        trust_keys=tuple(trust_keys),
        ok=report.ok,
        checks=tuple(CheckRow(id=r.id, ok=r.ok, detail=r.detail) for r in report.results),
        quorums=tuple(quorum.notes)
        if quorum is not None and quorum.ok
        else (tuple(quorum.problems) if quorum is not None else ()),
        events=events,
        ceremony_id=report.ceremony_id or "",
    )


def _event_time(t: Any) -> str:
    if isinstance(t, int | float):
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    return str(t)


def export_report(view: AuditView, path: str) -> Path:
    """Write the verification report as JSON (``.json``) or text (anything else).

    Raises:
        UsageError: no path. StorageError: the file cannot be written.
    """
    from custody.errors import StorageError

    if not path:
        raise UsageError("No report path given", "Type where to write the report.")
    p = Path(path).expanduser()
    if p.suffix == ".json":
        data = json.dumps(view.to_report(), indent=2, sort_keys=True) + "\n"
    else:
        lines = [
            f"bundle: {view.bundle}",
            f"ceremony: {view.ceremony_id}",
            f"result: {'PASS' if view.ok else 'FAIL'}",
            "",
        ]
        lines += [f"[{'pass' if c.ok else 'FAIL'}] {c.id}: {c.detail}" for c in view.checks]
        lines += ["", *view.quorums]
        data = "\n".join(lines) + "\n"
    try:
        p.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise StorageError(
            f"Cannot write the report to {p}", "Check the directory and its permissions."
        ) from exc
    return p


# --------------------------------------------------------------------------- fixed data


@dataclass
class StaticServices:
    """Fixed data for snapshot tests and screenshots. No disk, no token."""

    settings: Settings
    view: DashboardView | None = None
    audit: AuditView | None = None
    fail_with: CustodyError | None = None
    log_entries: tuple[AuditEntryRow, ...] = ()
    log_covered: int = 0
    proof: ProofView | None = None
    rekey: RekeyView | None = None
    plan: PlanView | None = None
    logins: list[str] = field(default_factory=list, repr=False)

    def has_pin(self) -> bool:
        return self.view is not None and self.view.hsm.state == "ok"

    def login(self, pin: str) -> None:
        self.logins.append("<pin>")
        if self.fail_with:
            raise self.fail_with

    def dashboard(self) -> DashboardView:
        if self.fail_with:
            raise self.fail_with
        if self.view is None:
            raise ConfigError("No fixed dashboard data", "Pass view= to StaticServices.")
        return self.view

    def inventory(self) -> tuple[KeyRow, ...]:
        d = self.dashboard()
        return d.roots + d.keks

    def verify_bundle(self, bundle: str, trust_keys: Sequence[str]) -> AuditView:
        if self.audit is None:
            return verify_bundle_view(bundle, trust_keys)
        return self.audit

    def export_report(self, view: AuditView, path: str) -> Path:
        return export_report(view, path)

    def audit_tail(self, start: int) -> AuditTail:
        n = len(self.log_entries)
        return AuditTail(
            size=n,
            start=min(start, n),
            entries=self.log_entries[start:],
            checkpoints=1 if self.log_covered else 0,
            covered=self.log_covered,
        )

    def audit_proof(self, seq: int, trust_keys: Sequence[str]) -> ProofView:
        from custody.errors import AuditError

        if self.proof is None or seq >= self.log_covered:
            raise AuditError(
                f"No checkpoint covers entry {seq} yet",
                "Sign one with 'custody audit checkpoint', then press p again.",
            )
        return self.proof

    def export_proof(self, proof: ProofView, path: str) -> Path:
        return export_proof(proof, path)

    def rekey_view(self) -> RekeyView:
        if self.rekey is None:
            raise ConfigError("No fixed re-key data", "Pass rekey= to StaticServices.")
        return self.rekey

    def rekey_jobs(self) -> tuple[JobView, ...]:
        return self.rekey_view().jobs

    def rekey_plan(self, branch: str | None, due: bool = False) -> PlanView:
        if self.plan is None:
            raise ConfigError("No fixed plan", "Pass plan= to StaticServices.")
        return self.plan

    def rekey_run(
        self, branch: str | None, due: bool, batch: int, progress: Callable[[int], None]
    ) -> RunView:
        raise UsageError("Fixed data", "StaticServices does not run jobs.")

    def cancel_destroy(self, branch: str, version: int) -> str:
        raise UsageError("Fixed data", "StaticServices does not change anything.")


# --------------------------------------------------------------------------- audit log viewer


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntryRow:
    """One entry of the operational audit log (``HOME/audit.db``); never holds a value."""

    seq: int
    time: int  # Unix seconds, as recorded
    actor: str
    op: str
    target: str
    outcome: str  # intent | ok | denied | failed
    details: tuple[tuple[str, str], ...] = ()
    prev: str = ""
    log: str = ""

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%d %H:%M:%S")

    @classmethod
    def of(cls, line: bytes | str) -> AuditEntryRow:
        e = json.loads(line)
        return cls(
            seq=int(e["seq"]),
            time=int(e["time"]),
            actor=str(e["actor"]),
            op=str(e["op"]),
            target=str(e["target"]),
            outcome=str(e["outcome"]),
            details=tuple(
                (str(k), json.dumps(v) if not isinstance(v, str) else v)
                for k, v in sorted(e.get("details", {}).items())
            ),
            prev=str(e.get("prev", "")),
            log=str(e.get("log", "")),
        )

    def fields(self) -> list[Field]:
        out = [
            Field(label="seq", value=str(self.seq)),
            Field(label="time", value=self.when + " UTC"),
            Field(label="actor", value=self.actor),
            Field(label="op", value=self.op),
            Field(label="target", value=self.target),
            Field(label="outcome", value=self.outcome),
        ]
        out += [Field(label=k, value=v) for k, v in self.details]
        return [
            *out,
            Field(label="prev (chain)", value=self.prev),
            Field(label="log id", value=self.log),
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditTail:
    """Entries ``[start, size)`` of the log, and how far its checkpoints reach."""

    size: int
    start: int
    entries: tuple[AuditEntryRow, ...]
    checkpoints: int
    covered: int  # tree size of the latest checkpoint (0: none)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProofView:
    """An inclusion proof of one entry, and the result of checking it (if a key is pinned)."""

    seq: int
    tree_size: int
    root: str
    doc: dict[str, Any] = field(hash=False, compare=False)
    trust_keys: tuple[str, ...] = ()
    ok: bool | None = None  # None: not checked (no trust key pinned)
    summary: str = ""


def entry_matches(e: AuditEntryRow, flt: str) -> bool:
    """Filter terms, all of which must match: ``op=``, ``actor=``, ``outcome=``, or text."""
    for term in flt.split():
        name, sep, value = term.partition("=")
        value = value.lower()
        if sep and name in ("op", "actor", "outcome", "target"):
            have = getattr(e, name).lower()
            if (value not in have) if name != "outcome" else (have != value):
                return False
        elif (
            term.lower()
            not in " ".join(
                (e.op, e.target, e.actor, e.outcome, *(f"{k}={v}" for k, v in e.details))
            ).lower()
        ):
            return False
    return True


def _open_audit(home_root: Path) -> AuditLog:
    from custody.audit.log import AUDIT_DB, AuditLog
    from custody.errors import AuditError

    if not (home_root / AUDIT_DB).exists():
        raise AuditError(
            f"No audit log at {home_root / AUDIT_DB}",
            "It is created by the first audited command (custody status, kek rotate ...).",
        )
    return AuditLog(home_root / AUDIT_DB, timeout=5.0)


def audit_tail(home_root: Path, start: int, limit: int = 5000) -> AuditTail:
    """Entries from *start* (at most the last *limit*), for the live viewer.

    Raises:
        AuditError: no audit log, or it cannot be read.
    """
    import sqlite3

    from custody.errors import AuditError

    try:
        with _open_audit(home_root) as log:
            n = log.size()
            first = max(start, n - limit, 0)
            lines = log.lines(first, n) if n > first else []
            cps = [json.loads(c) for c in log.checkpoint_lines()]
    except sqlite3.Error as exc:
        raise AuditError(
            "Cannot read the audit log", "Check the home and its permissions."
        ) from exc
    return AuditTail(
        size=n,
        start=first,
        entries=tuple(AuditEntryRow.of(x) for x in lines),
        checkpoints=len(cps),
        covered=max((int(c["tree_size"]) for c in cps), default=0),
    )


def _trust(paths: Sequence[str]) -> list[Any]:
    from custody.audit.signers import parse_trust_key

    out = []
    for path in paths:
        p = Path(path).expanduser()
        try:
            out.append(parse_trust_key(p.read_bytes(), default_name=p.stem))
        except OSError as exc:
            raise UsageError(f"Cannot read trust key {p}", "Check the path you pinned.") from exc
    return out


def audit_proof(home_root: Path, seq: int, trust_keys: Sequence[str]) -> ProofView:
    """Produce the inclusion proof of entry *seq*, and check it against *trust_keys*.

    Raises:
        AuditError: no such entry; no checkpoint covers it yet; or the check failed
            (not signed by a pinned key, entry not included). UsageError: unreadable key.
    """
    from custody.audit.records import check_proof
    from custody.errors import AuditError

    with _open_audit(home_root) as log:
        try:
            doc = log.proof(seq)
        except AuditError as err:
            if "checkpoint" in err.title:
                raise AuditError(
                    err.title,
                    "A proof needs a signed checkpoint covering the entry. Sign one with "
                    "'custody audit checkpoint --home HOME --pin-file FILE' (the token's audit "
                    "key), then press p again.",
                ) from err
            raise
    cp = doc["checkpoint"]
    view = ProofView(
        seq=seq,
        tree_size=int(cp["tree_size"]),
        root=str(cp["root"]),
        doc=doc,
        trust_keys=tuple(trust_keys),
    )
    if not trust_keys:
        return view
    summary = check_proof(doc, _trust(trust_keys))
    return ProofView(
        seq=seq,
        tree_size=view.tree_size,
        root=view.root,
        doc=doc,
        trust_keys=tuple(trust_keys),
        ok=True,
        summary=summary,
    )


def export_proof(proof: ProofView, path: str) -> Path:
    """Write the proof JSON exactly as ``custody audit proof --out`` does.

    Raises:
        UsageError: no path. StorageError: the file cannot be written.
    """
    from custody.errors import StorageError

    if not path:
        raise UsageError("No proof path given", "Type where to write the proof.")
    p = Path(path).expanduser()
    try:
        p.write_text(json.dumps(proof.doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        raise StorageError(
            f"Cannot write the proof to {p}", "Check the directory and its permissions."
        ) from exc
    return p


# --------------------------------------------------------------------------- re-key screen


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionRow:
    """One KEK version and its retirement stage."""

    branch: str
    version: int
    state: str
    objects: int
    created: str
    destroy_after: str = ""
    hold: bool = False

    @property
    def name(self) -> str:
        return f"{self.branch}/v{self.version}"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobView:
    """A re-key job as recorded in the store (updated every batch)."""

    id: int
    branch: str
    to_version: int
    state: str
    done: int
    total: int
    started: str
    updated: str
    finished: str = ""
    verified: int | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RekeyView:
    versions: tuple[VersionRow, ...]
    jobs: tuple[JobView, ...]
    policy: tuple[RotationRow, ...]
    pending: tuple[tuple[str, int, int], ...]  # (branch, version, objects)
    lease: str = ""  # "pid 123 on host until ..." while a job runs


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanView:
    """What a job would do: the content of the confirmation dialog."""

    branch: str | None
    items: tuple[tuple[str, int, int | None, int], ...]  # (branch, from, to, objects)
    rotate: tuple[str, ...]
    total: int
    rate: float
    eta_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RunView:
    status: str  # done | nothing-to-do | busy
    moved: int
    lines: tuple[str, ...]


def _job_view(j: Any) -> JobView:
    return JobView(
        id=j.id,
        branch=j.branch,
        to_version=j.to_version,
        state=j.state,
        done=j.done,
        total=j.total,
        started=j.started,
        updated=j.updated,
        finished=j.finished or "",
        verified=j.verified,
    )


def _due_rows(items: Sequence[Any]) -> tuple[RotationRow, ...]:
    return tuple(
        RotationRow(
            key=f"{d.key}/v{d.version}" if d.version is not None else f"{d.key}/-",
            key_class=d.key_class,
            period_days=d.period_days,
            last_rotation=_date(d.created.isoformat()) if d.created else "never",
            due=_date(d.due_at.isoformat()) if d.due_at else "now",
            days_left=d.days_left if d.days_left is not None else 0,
            status=d.status,
        )
        for d in items
    )


def rekey_view(home_root: Path, now: datetime) -> RekeyView:
    """Versions, jobs, lease and policy due dates (no PIN needed).

    Raises:
        ConfigError: no deployment. StorageError: the store cannot be read.
    """
    from custody import policy, rekey_retire
    from custody.config import Home
    from custody.deployment import Deployment

    with Deployment.open(Home(home_root)) as dep:
        h, cfg = dep.hierarchy, dep.config
        st = rekey_retire.status(h, cfg, now=now)
        due = policy.evaluate(rekey_retire.key_ages(h, cfg), cfg.branches, now)
        jobs = tuple(_job_view(j) for j in rekey_retire.jobs(dep.store))
    lease = st["lease"]
    return RekeyView(
        versions=tuple(
            VersionRow(
                branch=v["branch"],
                version=v["version"],
                state=v["state"],
                objects=v["objects"],
                created=v["created"] or "",
                destroy_after=v["destroy_after"] or "",
                hold=bool(v["hold"]),
            )
            for v in st["versions"]
        ),
        jobs=jobs,
        policy=_due_rows(due),
        pending=tuple((p["branch"], p["version"], p["objects"]) for p in st["pending"]),
        lease=f"pid {lease['pid']} on {lease['host']} to {str(lease['expires'])[11:16]}Z"
        if lease
        else "",
    )


def rekey_jobs(home_root: Path) -> tuple[JobView, ...]:
    """The recent jobs only (cheap; polled for live progress of another process's job)."""
    from custody import rekey_retire
    from custody.config import Home
    from custody.store import Store

    store = Store.open(Home(home_root).db_path)
    try:
        return tuple(_job_view(j) for j in rekey_retire.jobs(store))
    finally:
        store.close()


def rekey_plan(home_root: Path, now: datetime, branch: str | None, due: bool = False) -> PlanView:
    """What ``rekey run`` would move, and an estimate (no PIN needed).

    Raises:
        UsageError: unknown branch. ConfigError, StorageError.
    """
    from custody import rekey
    from custody.config import Home
    from custody.deployment import Deployment

    with Deployment.open(Home(home_root)) as dep:
        p = rekey.plan(dep.hierarchy, dep.config, now=now, branch=branch, due=due)
    return PlanView(
        branch=branch,
        items=tuple((i.branch, i.from_version, i.to_version, i.objects) for i in p.items),
        rotate=p.rotate,
        total=p.total,
        rate=p.rate,
        eta_seconds=p.eta_seconds,
    )


def rekey_run(
    home_root: Path,
    pin: str,
    branch: str | None,
    due: bool,
    batch: int,
    progress: Callable[[int], None],
) -> RunView:
    """Run (or resume) re-key jobs with this thread's own deployment, audited like the CLI.

    Raises:
        AuditError: the intent could not be logged (nothing done). HsmError, PolicyError,
        IntegrityError, StorageError, UsageError: from :func:`custody.rekey.run`.
    """
    from ceremonies.cli.audited import actor_name
    from custody import rekey
    from custody.audit.log import AuditLog
    from custody.config import Home
    from custody.deployment import Deployment

    home = Home(home_root)
    details: dict[str, object] = {"batch": batch, "via": "tui"}
    if branch:
        details["branch"] = branch
    if due:
        details["due"] = True
    actor = actor_name()

    def sink(w: Any) -> None:
        with AuditLog.for_home(home) as wlog:
            wlog.append(
                "rotation.warning",
                str(w.get("key") or w.get("branch") or "policy"),
                actor,
                details={k: v for k, v in w.items() if isinstance(v, (str, int, float, bool))},
            )

    with (
        AuditLog.for_home(home) as log,
        log.guard("rekey run", branch or home.root.name, actor, details=details),
        Deployment.open(home, pin) as dep,
    ):
        rep = rekey.run(
            dep.hierarchy,
            dep.config,
            branch=branch,
            due=due,
            batch=batch,
            progress=progress,
            audit=sink,
        )
    lines = [f"rotated: {r} is now current" for r in rep.rotated]
    lines += [
        f"{j.branch}: moved {j.moved} objects to v{j.to_version} ({j.rate:,.0f}/s); "
        f"verified {j.verified}"
        for j in rep.jobs
    ]
    lines += [f"retirement: {s}" for s in rep.retired]
    if rep.status == "busy" and rep.holder:
        lines.append(f"another job (pid {rep.holder.pid} on {rep.holder.host}) holds the lease")
    return RunView(status=rep.status, moved=sum(j.moved for j in rep.jobs), lines=tuple(lines))


def cancel_destroy(home_root: Path, branch: str, version: int, now: datetime) -> str:
    """Cancel a scheduled destruction (back to disabled, with a hold). Audited.

    Raises:
        UsageError: no such version. PolicyError: not destroy-scheduled. AuditError.
    """
    from ceremonies.cli.audited import actor_name
    from custody import rekey_retire
    from custody.audit.log import AuditLog
    from custody.config import Home
    from custody.deployment import Deployment

    home = Home(home_root)
    with (
        AuditLog.for_home(home) as log,
        log.guard(
            "rekey cancel-destroy",
            branch,
            actor_name(),
            details={"branch": branch, "version": version, "via": "tui"},
        ),
        Deployment.open(home) as dep,
    ):
        k = rekey_retire.cancel_destroy(
            dep.hierarchy, branch, version, now=now, reason="cancelled in custody tui"
        )
    return f"{branch}/v{version} is {k.state.value}; held"

"""The TUI's thin services layer: every read of the disk or the HSM goes through here.

Screens never touch the store, the token or a file. They call a :class:`Services`
object from a thread worker and get back plain, frozen view models (``DashboardView``,
``KeyRow``, ``AuditView`` ...). That keeps the screens testable with fixed data (the
snapshot tests inject :class:`tui.fakes.StaticServices`), and keeps blocking work off the UI thread.

This module owns the :class:`Services` protocol, the PIN and :class:`HomeServices`; the
view models and their loaders live by concern and are re-exported here:
``services_status`` (dashboard, inventory, drills), ``services_auditor`` (transcript
bundles), ``services_audit`` (the audit log viewer), ``services_rekey`` (the re-key
screen) and ``services_common`` (settings, fields); the fixed-data fakes live in
:mod:`tui.fakes`.

Secrets: the token PIN comes from ``--pin-file``, ``CUSTODY_PIN`` or the PIN modal. It is
held by :class:`_PinBox` (masked ``repr``), never on a reactive, never in a view model.
Every failure a user can meet is a :class:`~custody.errors.CustodyError` (title + hint),
which the app shows in its one error modal.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from custody.errors import ConfigError, CustodyError, UsageError
from tui.services.audit import (
    AuditEntryRow,
    AuditTail,
    ProofView,
    audit_proof,
    audit_tail,
    entry_matches,
    export_proof,
)
from tui.services.auditor import (
    AuditView,
    BundleRow,
    CheckRow,
    EventRow,
    export_report,
    home_bundles,
    trust_key_names,
    verify_bundle_view,
)
from tui.services.common import Clock, Field, Settings, utcnow
from tui.services.rekey import (
    JobView,
    PlanView,
    RekeyView,
    RunView,
    VersionRow,
    cancel_destroy,
    rekey_jobs,
    rekey_plan,
    rekey_run,
    rekey_view,
)
from tui.services.status import (
    Alert,
    CustodianRow,
    DashboardView,
    HsmView,
    KeyRow,
    RotationRow,
    _hsm_view,
    _kek_rows,
    _root_rows,
    alerts_for,
    custodian_rows,
    drill_alerts,
    rotation_rows,
)

if TYPE_CHECKING:
    from custody.config import Config, Home


class Services(Protocol):
    """What the screens may ask for. Every method may block; call it from a worker."""

    settings: Settings

    def has_pin(self) -> bool: ...
    def pin(self) -> str | None: ...
    def login(self, pin: str) -> None: ...
    def dashboard(self) -> DashboardView: ...
    def inventory(self) -> tuple[KeyRow, ...]: ...
    def verify_bundle(self, bundle: str, trust_keys: Sequence[str]) -> AuditView: ...
    def export_report(self, view: AuditView, path: str) -> Path: ...
    def trust_key_names(self, path: str) -> tuple[str, ...]: ...
    def bundles(self) -> tuple[BundleRow, ...]: ...
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

    def pin(self) -> str | None:
        """The session's token PIN, for a worker that opens the token (the ceremonies).

        From ``--pin-file`` or ``CUSTODY_PIN`` on first use, else what :meth:`login`
        accepted; None when none was given. Hand it straight to ``open_deployment``: never
        keep it on a reactive, a view model or a log line.

        Raises:
            ConfigError, UsageError: the PIN file cannot be read or has no ``pin``.
        """
        return self._load_pin()

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
        from custody.deployment import open_token

        open_token(self._home(), pin).close()  # proves the PIN; the token is closed again
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
        custodians = custodian_rows(self._home().db_path, cfg, now)
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
            + drill_alerts(self._home().db_path, cfg, now, custodians),
            objects=tuple(sorted(st.get("objects", {}).items())),
            dev_root=st.get("dev_root", False),
        )

    def inventory(self) -> tuple[KeyRow, ...]:
        d = self.dashboard()
        return d.roots + d.keks

    def verify_bundle(self, bundle: str, trust_keys: Sequence[str]) -> AuditView:
        return verify_bundle_view(bundle, trust_keys)

    def trust_key_names(self, path: str) -> tuple[str, ...]:
        return trust_key_names(path)

    def bundles(self) -> tuple[BundleRow, ...]:
        return home_bundles(self.settings.home)

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


__all__ = [
    "Alert",
    "AuditEntryRow",
    "AuditTail",
    "AuditView",
    "BundleRow",
    "CheckRow",
    "Clock",
    "CustodianRow",
    "DashboardView",
    "EventRow",
    "Field",
    "HomeServices",
    "HsmView",
    "JobView",
    "KeyRow",
    "PlanView",
    "ProofView",
    "RekeyView",
    "RotationRow",
    "RunView",
    "Services",
    "Settings",
    "VersionRow",
    "alerts_for",
    "audit_proof",
    "audit_tail",
    "entry_matches",
    "export_proof",
    "export_report",
    "rotation_rows",
    "utcnow",
    "verify_bundle_view",
]

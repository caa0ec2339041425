"""Fixed data for the snapshot tests and the screenshots: :class:`StaticServices`.

It implements :class:`tui.services.home.Services` without a disk or a token, so every screen
can be rendered in a deterministic state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from custody.errors import ConfigError, CustodyError, UsageError
from tui.services.audit import AuditEntryRow, AuditTail, ProofView, export_proof
from tui.services.auditor import (
    AuditView,
    BundleRow,
    export_report,
    trust_key_names,
    verify_bundle_view,
)
from tui.services.common import Settings
from tui.services.rekey import JobView, PlanView, RekeyView, RunView
from tui.services.status import DashboardView, KeyRow


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
    bundle_rows: tuple[BundleRow, ...] = ()

    def has_pin(self) -> bool:
        return self.view is not None and self.view.hsm.state == "ok"

    def pin(self) -> str | None:
        return None  # fixed data never holds a PIN

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

    def trust_key_names(self, path: str) -> tuple[str, ...]:
        return trust_key_names(path)  # reads the file: tests pin real fixture keys

    def bundles(self) -> tuple[BundleRow, ...]:
        return self.bundle_rows

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

"""Fixed data for the access, alerts, compliance and services screens' snapshot tests.

:class:`StaticAccessServices` and :class:`StaticMonitorServices` implement
:class:`tui.services.access.AccessServices` and :class:`tui.services.monitor.MonitorServices`
without a disk, a token or a key: the snapshots are stable and hold no secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from custody.errors import UsageError
from tui.services.access import AccessView, ApproveOutcome, GrantItem, RequestItem
from tui.services.audit import AuditEntryRow
from tui.services.monitor import AlertItem, ComplianceView
from tui.services.service_accounts import ServiceItem

FIXED = ("Fixed data", "The static services change nothing.")


@dataclass
class StaticAccessServices:
    view_data: AccessView
    calls: list[str] = field(default_factory=list)

    def view(self) -> AccessView:
        return self.view_data

    def request(
        self, principal: str, env: str, path: str, duration: str, why: str, actions: str
    ) -> RequestItem:
        self.calls.append("request")
        raise UsageError(*FIXED)

    def approve_needs_code(self, request_id: str, key_path: str) -> bool:
        return False

    def approve(
        self, request_id: str, key_path: str, passphrase: str, mfa_code: str | None = None
    ) -> ApproveOutcome:
        self.calls.append("approve <passphrase>")
        raise UsageError(*FIXED)

    def revoke(self, grant_id: str, reason: str) -> GrantItem:
        self.calls.append("revoke")
        raise UsageError(*FIXED)


@dataclass
class StaticMonitorServices:
    alert_items: tuple[AlertItem, ...] = ()
    entries: tuple[AuditEntryRow, ...] = ()
    report: ComplianceView | None = None

    def alerts(self) -> tuple[AlertItem, ...]:
        return self.alert_items

    def alert_entries(self, alert: AlertItem) -> tuple[AuditEntryRow, ...]:
        return tuple(e for e in self.entries if e.seq in alert.seqs)

    def ack(self, alert_id: str, note: str) -> AlertItem:
        raise UsageError(*FIXED)

    def compliance(self) -> ComplianceView:
        if self.report is None:
            raise UsageError("No fixed report", "Pass report= to StaticMonitorServices.")
        return self.report


@dataclass
class StaticServiceAccountServices:
    items: tuple[ServiceItem, ...] = ()
    verified: bool = True

    def services(self) -> tuple[ServiceItem, ...]:
        return self.items


__all__ = ["StaticAccessServices", "StaticMonitorServices", "StaticServiceAccountServices"]

"""The alerts and compliance screens' services (issue 16 items 5 and 7).

Alerts are what the audit log records (``alert.raised``, ``alert.ack``), listed with
:func:`custody.monitor.list_alerts` exactly as ``custody alerts`` lists them, each with the
audit entries behind it (read by seq from the same log). An acknowledgement is
:func:`custody.monitor.ack` by the local operator (one ``alert.ack`` entry; never by the
principal the alert is about). The compliance report is
:func:`custody.report.compliance_report` over :func:`custody.report.home.gather_home`, as
``custody report compliance`` computes it, and each section's text is the CLI's text form.

Nothing here needs the token. Alerts and the report hold names, dates, counts and seqs,
never a value; every string from the log is escaped for display.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from custody.audit.scope import actor_name
from custody.config import Home
from custody.deployment import open_audit_log
from custody.monitor import AlertRecord, ack, list_alerts
from custody.report import compliance_report, to_text
from custody.report.home import gather_home
from custody.textsafe import printable
from tui.services.audit import AuditEntryRow
from tui.services.common import Clock, Field

MAX_ENTRIES = 200  # entries shown behind one alert (the detail says how many more)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertItem:
    """One recorded alert (no value: names, counts and seqs)."""

    id: str
    seq: int
    time: int
    rule: str
    kind: str
    principal: str
    target: str
    summary: str
    score: float
    seqs: tuple[int, ...]
    acked_by: str = ""
    ack_note: str = ""
    facts: tuple[tuple[str, str], ...] = ()

    @property
    def open(self) -> bool:
        return not self.acked_by

    @property
    def state(self) -> str:
        return "open" if self.open else f"acked by {self.acked_by}"

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%d %H:%M")

    def fields(self) -> list[Field]:
        out = [
            Field(label="alert", value=self.id),
            Field(label="rule", value=f"{self.rule} ({self.kind})"),
            Field(label="principal", value=self.principal),
            Field(label="target", value=self.target or "-"),
            Field(label="when", value=self.when),
            Field(label="state", value=self.state),
            Field(label="summary", value=self.summary),
            Field(label="score", value=f"{self.score:g}"),
            Field(label="entries", value=", ".join(str(s) for s in self.seqs) or "-"),
            Field(label="raised at entry", value=str(self.seq)),
        ]
        if self.ack_note:
            out.append(Field(label="ack note", value=self.ack_note))
        out.extend(Field(label=k, value=v) for k, v in self.facts)
        return out


def alert_item(r: AlertRecord) -> AlertItem:
    p = printable
    by = r.ack.get("by") if r.ack else None
    return AlertItem(
        id=p(r.id),
        seq=r.seq,
        time=r.time,
        rule=p(r.rule),
        kind=p(r.kind),
        principal=p(r.principal),
        target=p(r.target),
        summary=p(r.summary),
        score=r.score,
        seqs=r.seqs,
        acked_by=p(str(by)) if r.ack else "",
        ack_note=p(str(r.ack.get("note", ""))) if r.ack else "",
        facts=tuple((p(str(k)), p(str(v))) for k, v in sorted(r.facts.items())),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SectionItem:
    """One section of the compliance report: its status, headline and its text block."""

    id: str
    title: str
    status: str  # ok | findings | not-available
    findings: int
    text: str  # the section as ``custody report compliance`` prints it
    items: tuple[tuple[tuple[str, str], ...], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ComplianceView:
    deployment_id: str
    at: str
    findings: int
    sections: tuple[SectionItem, ...]
    header: str = ""


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def compliance_view(report: Mapping[str, Any]) -> ComplianceView:
    """The report's sections, each with the CLI's text of it (:func:`to_text`)."""
    blocks = to_text(report).rstrip("\n").split("\n\n")
    header, texts = blocks[0], blocks[1:]
    sections = []
    for i, s in enumerate(report["sections"]):
        text = texts[i] if i < len(texts) else ""
        sections.append(
            SectionItem(
                id=printable(s["id"]),
                title=printable(s["title"]),
                status=printable(s["status"]),
                findings=len(s["items"]),
                text=text,
                items=tuple(
                    tuple((printable(str(k)), printable(_fmt(v))) for k, v in item.items())
                    for item in s["items"]
                ),
            )
        )
    return ComplianceView(
        deployment_id=printable(str(report.get("deployment_id"))),
        at=printable(str(report["at"])),
        findings=int(report["findings"]),
        sections=tuple(sections),
        header=header,
    )


class MonitorServices(Protocol):
    """What the alerts and compliance screens need. Every method may block and raise a
    CustodyError."""

    def alerts(self) -> tuple[AlertItem, ...]: ...
    def alert_entries(self, alert: AlertItem) -> tuple[AuditEntryRow, ...]: ...
    def ack(self, alert_id: str, note: str) -> AlertItem: ...
    def compliance(self) -> ComplianceView: ...


class HomeMonitorServices:
    """Alerts and the compliance report of a real home (no token)."""

    def __init__(self, home: Path, clock: Clock) -> None:
        self.home = Path(home)
        self.clock = clock

    def __repr__(self) -> str:
        return f"HomeMonitorServices(home={str(self.home)!r})"

    def _log(self) -> Any:
        home = Home(self.home)
        home.load()  # a missing home is a ConfigError before anything else
        return open_audit_log(home)

    def alerts(self) -> tuple[AlertItem, ...]:
        """Every recorded alert, newest first (``custody alerts``)."""
        log = self._log()
        try:
            recs = list_alerts(log)
        finally:
            log.close()
        return tuple(alert_item(r) for r in reversed(recs))

    def alert_entries(self, alert: AlertItem) -> tuple[AuditEntryRow, ...]:
        """The audit entries behind *alert*, by seq (at most :data:`MAX_ENTRIES`)."""
        log = self._log()
        try:
            size = log.size()
            out: list[AuditEntryRow] = []
            for seq in alert.seqs[:MAX_ENTRIES]:
                if 0 <= seq < size:
                    out.extend(AuditEntryRow.of(line) for line in log.lines(seq, seq + 1))
        finally:
            log.close()
        return tuple(out)

    def ack(self, alert_id: str, note: str) -> AlertItem:
        """``custody alerts ack ID --note TEXT`` by the local operator."""
        log = self._log()
        try:
            return alert_item(ack(log, alert_id, actor_name(), note=note[:300]))
        finally:
            log.close()

    def compliance(self) -> ComplianceView:
        """``custody report compliance`` (defaults: 30 days, a day-old checkpoint)."""
        now = self.clock()
        ev = gather_home(Home(self.home), now)
        return compliance_view(compliance_report(ev, now=now))


def monitor_services(app: Any) -> MonitorServices:
    """The app's monitor services, created on first use (tests may preset
    ``app.monitor_services``)."""
    svc = getattr(app, "monitor_services", None)
    if svc is None:
        svc = HomeMonitorServices(app.settings.home, app.settings.clock)
        app.monitor_services = svc
    return svc


__all__ = [
    "MAX_ENTRIES",
    "AlertItem",
    "ComplianceView",
    "HomeMonitorServices",
    "MonitorServices",
    "SectionItem",
    "alert_item",
    "compliance_view",
    "monitor_services",
]

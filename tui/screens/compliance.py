"""The compliance report (issue 16 item 7, docs/compliance.md).

One row per section (status, title, findings); the pane below shows the highlighted
section as ``custody report compliance`` prints it, with every finding. Enter opens the
section's findings one per row. Computed from the store and the audit log only (no token).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static

from tui.screens.base import ItemTable, Payload, ServiceScreen
from tui.screens.modals import DetailScreen
from tui.services.common import Field
from tui.services.monitor import ComplianceView, SectionItem, monitor_services

STATUS = {
    "ok": ("OK", "bold green"),
    "findings": ("FINDINGS", "bold yellow"),
    "not-available": ("N/A", "dim"),
}


class ReportLoaded(Payload[ComplianceView]):
    pass


class ComplianceScreen(ServiceScreen):
    """The compliance report's sections and their findings."""

    BINDINGS = [Binding("r", "refresh", "Refresh")]

    def __init__(self) -> None:
        super().__init__()
        self.report: ComplianceView | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with VerticalScroll(id="compliance"):
            yield Static("loading ...", id="co-summary")
            yield ItemTable(id="co-sections", title="Compliance report")
            yield Static("", id="co-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#co-sections", DataTable).add_columns("status", "section", "findings")
        self.query_one("#co-sections", DataTable).focus()
        self.action_refresh()

    def _services(self) -> Any:
        return monitor_services(self.app)

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False, exclusive=True, group="compliance-load")
    def load(self) -> None:
        self.post_message(ReportLoaded(self._services().compliance()))

    def on_report_loaded(self, msg: ReportLoaded) -> None:
        self.report = rep = msg.value
        self.query_one("#co-summary", Static).update(
            Text(f"{rep.deployment_id} at {rep.at}: {rep.findings} finding(s)")
        )
        table = self.query_one("#co-sections", DataTable)
        table.clear()
        for s in rep.sections:
            label, style = STATUS.get(s.status, (s.status, ""))
            findings = "-" if s.status == "not-available" else str(s.findings)
            table.add_row(Text(label, style=style), s.title, findings, key=s.id)
        if rep.sections:
            self._show(rep.sections[0])

    def _section(self, sid: Any) -> SectionItem | None:
        if self.report is None:
            return None
        return next((s for s in self.report.sections if s.id == sid), None)

    def _show(self, s: SectionItem) -> None:
        self.query_one("#co-text", Static).update(Text(s.text))  # plain text, never markup

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        s = self._section(event.row_key.value)
        if s is not None:
            self._show(s)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        s = self._section(event.row_key.value)
        if s is None:
            return
        fields = [
            Field(label=f"{i + 1}. {k}", value=v) for i, item in enumerate(s.items) for k, v in item
        ] or [Field(label="findings", value="none" if s.status == "ok" else s.text)]
        self.app.push_screen(DetailScreen(s.title, fields))

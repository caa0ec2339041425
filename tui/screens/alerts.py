"""Monitoring alerts, each with the audit entries behind it (issue 16 item 5, docs/monitoring.md).

The upper table lists the alerts the audit log records, newest first (``custody alerts``);
the lower one, the entries behind the highlighted alert, read by seq from the same log.
Enter opens the alert's (or the entry's) detail. ``x`` acknowledges the highlighted alert
after asking for a note (``custody alerts ack ID --note TEXT``: one ``alert.ack`` entry,
never by the principal the alert is about). ``o`` shows only the open ones.
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
from tui.screens.modals import DetailScreen, TextPrompt
from tui.services.audit import AuditEntryRow
from tui.services.monitor import AlertItem, monitor_services


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


class AlertsLoaded(Payload[tuple[AlertItem, ...]]):
    pass


class EntriesLoaded(Payload[tuple[str, tuple[AuditEntryRow, ...]]]):
    pass


class Acked(Payload[AlertItem]):
    pass


class AlertsScreen(ServiceScreen):
    """Alerts and the entries behind them; acknowledge one."""

    BINDINGS = [
        Binding("x", "ack", "Ack"),
        Binding("o", "toggle_open", "Open only"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.alerts: tuple[AlertItem, ...] = ()
        self.open_only = False
        self.entries: tuple[AuditEntryRow, ...] = ()
        self._entries_of = ""

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with VerticalScroll(id="alerts-view"):
            yield Static("loading ...", id="al-summary")
            yield ItemTable(id="al-alerts", title="Alerts")
            yield ItemTable(id="al-entries", title="Audit entries behind the alert")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#al-alerts", DataTable).add_columns(
            "alert", "when", "rule", "principal", "state", "summary"
        )
        self.query_one("#al-entries", DataTable).add_columns(
            "seq", "time", "actor", "op", "target", "outcome"
        )
        self.query_one("#al-alerts", DataTable).focus()
        self.action_refresh()

    def _services(self) -> Any:
        return monitor_services(self.app)

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False, exclusive=True, group="alerts-load")
    def load(self) -> None:
        self.post_message(AlertsLoaded(self._services().alerts()))

    def _shown(self) -> tuple[AlertItem, ...]:
        return tuple(a for a in self.alerts if a.open or not self.open_only)

    def on_alerts_loaded(self, msg: AlertsLoaded) -> None:
        self.alerts = msg.value
        self._fill()

    def _fill(self) -> None:
        shown = self._shown()
        n_open = sum(1 for a in self.alerts if a.open)
        self.query_one("#al-summary", Static).update(
            Text(
                f"{n_open} open alert(s) of {len(self.alerts)}"
                + ("; showing the open ones (o: all)" if self.open_only else "")
            )
        )
        table = self.query_one("#al-alerts", DataTable)
        table.clear()
        room = max(16, self.app.size.width - 66)  # the summary takes what the others leave
        for a in shown:
            table.add_row(
                a.id[:8],
                a.when[5:],
                _short(a.rule, 14),
                _short(a.principal, 11),
                Text("open" if a.open else "acked", style="bold yellow" if a.open else "dim"),
                _short(a.summary, room),
                key=a.id,
            )
        if shown:
            self._load_entries(shown[0])
        else:
            self._entries_of = ""
            self.entries = ()
            self.query_one("#al-entries", DataTable).clear()

    def _current(self) -> AlertItem | None:
        t = self.query_one("#al-alerts", DataTable)
        if t.row_count == 0:
            return None
        key = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value
        return next((a for a in self.alerts if a.id == key), None)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "al-alerts":
            return
        a = next((a for a in self.alerts if a.id == event.row_key.value), None)
        if a is not None and a.id != self._entries_of:
            self._load_entries(a)

    def _load_entries(self, a: AlertItem) -> None:
        self._entries_of = a.id
        self.load_entries(a)

    @work(thread=True, exit_on_error=False, exclusive=True, group="alerts-entries")
    def load_entries(self, a: AlertItem) -> None:
        self.post_message(EntriesLoaded((a.id, self._services().alert_entries(a))))

    def on_entries_loaded(self, msg: EntriesLoaded) -> None:
        aid, entries = msg.value
        if aid != self._entries_of:
            return
        self.entries = entries
        table = self.query_one("#al-entries", DataTable)
        table.border_title = f"Audit entries behind {aid[:8]} ({len(entries)})"
        table.clear()
        target_w = 18 + max(0, self.app.size.width - 80) // 2
        for e in entries:
            table.add_row(
                str(e.seq),
                e.when[5:16],
                _short(e.actor, 11),
                _short(e.op, 14),
                _short(e.target, target_w),
                e.outcome,
                key=f"seq-{e.seq}",
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = str(event.row_key.value)
        if event.data_table.id == "al-alerts":
            a = next((a for a in self.alerts if a.id == key), None)
            if a is not None:
                self.app.push_screen(DetailScreen(f"Alert {a.id[:12]}", a.fields()))
            return
        e = next((e for e in self.entries if f"seq-{e.seq}" == key), None)
        if e is not None:
            self.app.push_screen(DetailScreen(f"Audit entry {e.seq}", e.fields()))

    def action_toggle_open(self) -> None:
        self.open_only = not self.open_only
        self._fill()

    def action_ack(self) -> None:
        a = self._current()
        if a is None or not a.open:
            self.notify("Highlight an open alert to acknowledge.", severity="warning")
            return

        def got(note: str | None) -> None:
            if note is not None:
                self.run_ack(a.id, note)

        self.app.push_screen(
            TextPrompt(f"Acknowledge {a.id[:12]} ({a.rule}, {a.principal}): a note", "reviewed"),
            got,
        )

    @work(thread=True, exit_on_error=False, group="alerts-ack")
    def run_ack(self, alert_id: str, note: str) -> None:
        self.post_message(Acked(self._services().ack(alert_id, note)))

    def on_acked(self, msg: Acked) -> None:
        self.notify(f"Acknowledged {msg.value.id[:12]}.")
        self.action_refresh()

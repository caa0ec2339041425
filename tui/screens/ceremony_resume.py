"""Pick the ceremony to resume from the open ones (``ceremonies.runner.open_ceremonies``).

Each row shows the ceremony's id, kind, coordinator, when it started and when it expires
(public data from the store's ceremonies table). Enter picks the highlighted one; ``i``
types an id instead (a ceremony the list does not show, such as one just expired, is then
refused by the runner with its reason).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Label, Static


def _when(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(int(ts), UTC).strftime("%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError):
        return "-"


def open_only(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ceremonies that can be resumed (state ``open``), newest first as given."""
    return [r for r in rows if r.get("state") == "open"]


class ResumeModal(ModalScreen[str | None]):
    """Returns the picked ceremony id, ``""`` to type one, or None."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("i", "type_id", "Type an id"),
    ]

    def __init__(self, rows: list[dict[str, Any]], now: int) -> None:
        super().__init__(classes="dialog-screen")
        self.rows = open_only(rows)
        self._now = now

    def compose(self) -> ComposeResult:
        with Vertical(id="resume-dialog", classes="dialog"):
            yield Label("Resume a ceremony", classes="dialog-title")
            table: DataTable[Any] = DataTable(id="resume-table", cursor_type="row")
            yield table
            yield Static(
                "Enter resumes the highlighted ceremony; i types an id."
                if self.rows
                else "No open ceremony. Press i to type an id, or Escape.",
                classes="dim",
            )
        yield Footer()

    def on_mount(self) -> None:
        t = self.query_one("#resume-table", DataTable)
        t.add_columns("ceremony", "kind", "coordinator", "started (UTC)", "expires")
        for r in self.rows:
            left = int(r.get("expires") or 0) - self._now
            exp = Text(_when(r.get("expires")), style="red" if left <= 0 else "")
            t.add_row(
                str(r["id"])[:12],
                r["kind"],
                r.get("coordinator") or "-",
                _when(r.get("created")),
                exp,
                key=str(r["id"]),
            )
        t.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.dismiss(str(event.row_key.value))

    def action_type_id(self) -> None:
        self.dismiss("")

    def action_cancel(self) -> None:
        self.dismiss(None)

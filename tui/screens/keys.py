"""Key inventory and rotation calendar.

The inventory lists every root and KEK version by policy class, with its state, last
rotation (creation of the version), due date and how many objects the version still
wraps. The calendar orders the branches' next rotations by due date.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Footer, Header

from tui.screens.base import ItemTable, ServiceScreen
from tui.screens.dashboard import key_fields, rotation_fields, styled
from tui.screens.modals import DetailScreen
from tui.services.home import DashboardView, Field, Services

CLASS_ORDER = {"high": 0, "medium": 1, "low": 2, "-": 3}


class InventoryLoaded(Message):
    def __init__(self, view: DashboardView) -> None:
        super().__init__()
        self.view = view


class KeysScreen(ServiceScreen):
    """Every key version, and when each branch must rotate next."""

    BINDINGS = [Binding("r", "refresh", "Refresh")]

    def __init__(self) -> None:
        super().__init__()
        self._details: dict[str, tuple[str, list[Field]]] = {}

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with VerticalScroll(id="keys"):
            yield ItemTable(id="inventory", title="Key inventory")
            yield ItemTable(id="calendar", title="Rotation calendar")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#inventory", DataTable).add_columns(
            "key", "class", "state", "last rotation", "due", "objects"
        )
        self.query_one("#calendar", DataTable).add_columns("due", "key", "class", "days", "status")
        self.query_one("#inventory", DataTable).focus()
        self.action_refresh()

    def action_refresh(self) -> None:
        self.load(self.app.services)  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, exclusive=True, group="keys")
    def load(self, services: Services) -> None:
        self.post_message(InventoryLoaded(services.dashboard()))

    def on_inventory_loaded(self, msg: InventoryLoaded) -> None:
        v = msg.view
        self._details.clear()
        inv = self.query_one("#inventory", DataTable)
        inv.clear()
        rows = sorted(
            v.roots + v.keks, key=lambda k: (CLASS_ORDER.get(k.key_class, 9), k.branch, -k.version)
        )
        for k in rows:
            self._details[k.name] = (k.name, key_fields(k))
            inv.add_row(
                k.name,
                k.key_class,
                styled(k.state),
                k.created[:10],
                k.due or "-",
                "-" if k.branch == "root" else str(k.objects),
                key=k.name,
            )
        cal = self.query_one("#calendar", DataTable)
        cal.clear()
        for r in sorted(v.rotations, key=lambda r: (r.status != "missing", r.due)):
            key = f"cal-{r.key}"
            self._details[key] = (
                f"Rotation {r.key}",
                rotation_fields(r),
            )
            cal.add_row(r.due, r.key, r.key_class, str(r.days_left), styled(r.status), key=key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if key in self._details:
            self.app.push_screen(DetailScreen(*self._details[key]))

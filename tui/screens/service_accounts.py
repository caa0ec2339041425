"""Registered services (issue 17 item 8): each service principal with its credential, last
access and counts; below, the secrets under the highlighted service's prefixes with the
versions it read (``old`` when one is no longer current), when it last read each, and the
rotation status. Enter opens the service's detail. From the store and the audit log only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static

from tui.screens.base import ItemTable, Payload, ServiceScreen
from tui.screens.modals import DetailScreen
from tui.services.access import UNVERIFIED_NOTE
from tui.services.service_accounts import ACK_NOTE, ServiceItem, service_account_services


def _when_short(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M")


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


class ServicesLoaded(Payload[tuple[tuple[ServiceItem, ...], bool]]):
    """The services, and whether their rows were checked against the access seal."""


class ServiceAccountsScreen(ServiceScreen):
    """Service principals, their use, their secrets' versions and rotation."""

    BINDINGS = [Binding("r", "refresh", "Refresh")]

    def __init__(self) -> None:
        super().__init__()
        self.items: tuple[ServiceItem, ...] = ()
        self._shown = ""

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with VerticalScroll(id="svc-view"):
            yield Static("loading ...", id="svc-summary")
            seal = Static(Text(UNVERIFIED_NOTE, style="bold red"), id="svc-unverified")
            seal.display = False  # shown once a load without the token says so
            yield seal
            yield ItemTable(id="svc-services", title="Services")
            yield ItemTable(id="svc-secrets", title="Secrets")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#svc-services", DataTable).add_columns(
            "service", "prefixes", "credential", "last access", "reads", "refused"
        )
        self.query_one("#svc-secrets", DataTable).add_columns(
            "secret", "class", "cur", "in use", "last read", "rotation"
        )
        self.query_one("#svc-services", DataTable).focus()
        self.action_refresh()

    def _services(self) -> Any:
        return service_account_services(self.app)

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False, exclusive=True, group="svc-load")
    def load(self) -> None:
        svc = self._services()
        items = svc.services()
        self.post_message(ServicesLoaded((items, svc.verified)))

    def on_services_loaded(self, msg: ServicesLoaded) -> None:
        self.items, verified = msg.value
        self.query_one("#svc-unverified", Static).display = not verified
        extra = max(0, self.app.size.width - 80)
        self.query_one("#svc-summary", Static).update(
            Text(f"{len(self.items)} service(s); {ACK_NOTE}")
        )
        table = self.query_one("#svc-services", DataTable)
        table.clear()
        for s in self.items:
            table.add_row(
                _short(s.name, 14 + extra // 6),
                _short(", ".join(s.prefixes) or "-", 14 + extra // 3),
                _short(s.credential, 14),
                s.last[5:] if s.last_time else "never",
                str(s.reads),
                Text(str(s.refused), style="bold red" if s.refused else ""),
                key=s.name,
            )
        self._shown = ""
        if self.items:
            self._show(self.items[0])
        else:
            self.query_one("#svc-secrets", DataTable).clear()

    def _show(self, s: ServiceItem) -> None:
        if s.name == self._shown:
            return
        self._shown = s.name
        extra = max(0, self.app.size.width - 80)
        table = self.query_one("#svc-secrets", DataTable)
        table.border_title = f"Secrets of {s.name} ({len(s.secrets)})"
        table.clear()
        for x in s.secrets:
            rot = x.rotation
            style = "bold red" if rot.startswith("overdue") else ("yellow" if "due" in rot else "")
            table.add_row(
                _short(x.target, 24 + extra // 2),
                x.security_class,
                f"v{x.current}" if x.current else "-",
                Text(x.in_use, style="bold yellow" if x.in_use.endswith("old") else ""),
                _when_short(x.last_read) if x.last_read else "never",
                Text(rot, style=style),
                key=x.target,
            )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "svc-services":
            s = next((s for s in self.items if s.name == event.row_key.value), None)
            if s is not None:
                self._show(s)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "svc-services":
            s = next((s for s in self.items if s.name == event.row_key.value), None)
            if s is not None:
                self.app.push_screen(DetailScreen(f"Service {s.name}", s.fields()))

"""The dashboard: token health, root and KEK versions, rotations, custodians, alerts.

Each panel is a row-cursor table; Enter on a row opens that item's detail view. Data comes
from :meth:`tui.services.home.Services.dashboard` in a thread worker.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Static

from tui.screens.base import ItemTable, ServiceScreen
from tui.screens.modals import DetailScreen, PinPrompt
from tui.services.home import DashboardView, Field, KeyRow, RotationRow, Services

STATUS_STYLE = {
    "ok": "green",
    "active": "green",
    "upcoming": "yellow",
    "due": "yellow",
    "decrypt-only": "yellow",
    "not checked": "yellow",
    "warning": "yellow",
    "drill due": "yellow",
    "info": "cyan",
    "overdue": "bold red",
    "missing": "red",
    "unreachable": "bold red",
    "alarm": "bold red",  # reachable, but the token and the store disagree
    "error": "bold red",
    "disabled": "dim",
    "destroy-scheduled": "dim",
    "destroyed": "dim",
}


def styled(value: str) -> Text:
    return Text(value, style=STATUS_STYLE.get(value, ""))


def key_fields(k: KeyRow) -> list[Field]:
    out = [
        Field(label="key", value=k.name),
        Field(label="state", value=k.state),
        Field(label="class", value=k.key_class),
        Field(label="KCV", value=k.kcv),
        Field(label="created", value=k.created),
        Field(label="age", value=f"{k.age_days} days"),
    ]
    if k.branch != "root":
        out.append(Field(label="objects wrapped", value=str(k.objects)))
    if k.due:
        out.append(Field(label="rotation due", value=f"{k.due} ({k.days_left} days)"))
    return out + list(k.extra)


def rotation_fields(r: RotationRow) -> list[Field]:
    """The detail fields of a rotation-policy row (keys screen calendar, re-key policy)."""
    return [
        Field(label="key", value=r.key),
        Field(label="class", value=r.key_class),
        Field(label="period", value=f"{r.period_days} days"),
        Field(label="last rotation", value=r.last_rotation),
        Field(label="due", value=r.due),
        Field(label="days left", value=str(r.days_left)),
        Field(label="status", value=r.status),
    ]


class DashboardLoaded(Message):
    def __init__(self, view: DashboardView) -> None:
        super().__init__()
        self.view = view


class LoggedIn(Message):
    pass


class DashboardScreen(ServiceScreen):
    """Where an operator starts: is the token up, what is due, what needs attention."""

    BINDINGS = [
        Binding("r", "refresh", "Refresh"),
        Binding("p", "login", "PIN"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.view: DashboardView | None = None
        self._details: dict[str, tuple[str, list[Field]]] = {}

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("loading ...", id="dash-summary")
        with VerticalScroll(id="dash"):
            yield ItemTable(id="alerts", title="Alerts")
            yield ItemTable(id="hsm", title="Token")
            yield ItemTable(id="roots", title="Root key")
            yield ItemTable(id="keks", title="KEKs")
            yield ItemTable(id="rotations", title="Rotations")
            yield ItemTable(id="custodians", title="Custodians")
        yield Footer()

    def on_mount(self) -> None:
        cols = {
            "hsm": ("item", "value"),
            "roots": ("version", "state", "KCV", "age"),
            "keks": ("key", "state", "class", "age", "objects"),
            "rotations": ("key", "class", "due", "days", "status"),
            "custodians": ("custodian", "last drill", "status"),
            "alerts": ("level", "alert"),
        }
        for tid, names in cols.items():
            self.query_one(f"#{tid}", DataTable).add_columns(*names)
        self.query_one("#alerts", DataTable).focus()
        self.load(self.app.services)  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, exclusive=True, group="dashboard")
    def load(self, services: Services) -> None:
        self.post_message(DashboardLoaded(services.dashboard()))

    @work(thread=True, exit_on_error=False, exclusive=True, group="login")
    def do_login(self, services: Services, pin: str) -> None:
        services.login(pin)
        self.post_message(LoggedIn())

    def on_logged_in(self, _: LoggedIn) -> None:
        self.notify("Logged in to the token", timeout=3)
        self.action_refresh()

    def action_refresh(self) -> None:
        self.load(self.app.services)  # type: ignore[attr-defined]

    def action_login(self) -> None:
        def done(pin: str | None) -> None:
            if pin:
                self.do_login(self.app.services, pin)  # type: ignore[attr-defined]

        self.app.push_screen(PinPrompt(), done)

    def _row(
        self, table: DataTable[Any], key: str, title: str, fields: list[Field], *cells: object
    ) -> None:
        self._details[key] = (title, fields)
        table.add_row(*cells, key=key)

    def on_dashboard_loaded(self, msg: DashboardLoaded) -> None:
        v = self.view = msg.view
        self._details.clear()
        root = v.current_root
        root_txt = f"{root.name} ({root.age_days}d old)" if root else "none"
        total = sum(n for _, n in v.objects)
        self.query_one("#dash-summary", Static).update(
            Text.assemble(
                ("deployment ", "dim"),
                v.deployment_id[:12],
                ("  token ", "dim"),
                styled(v.hsm.state),
                ("  root ", "dim"),
                root_txt,
                ("  objects ", "dim"),
                str(total),
            )
        )
        t = self.query_one("#hsm", DataTable)
        t.clear()
        hsm_fields = [
            Field(label="state", value=v.hsm.state),
            Field(label="token label", value=v.hsm.token_label),
            Field(label="module", value=v.hsm.module),
            Field(
                label="kind", value="embedded SoftHSMv2" if v.hsm.embedded else "external PKCS#11"
            ),
        ]
        if v.hsm.detail:
            hsm_fields.append(Field(label="detail", value=v.hsm.detail))
        if v.hsm.hint:
            hsm_fields.append(Field(label="hint", value=v.hsm.hint))
        hsm_fields += list(v.hsm.token)
        hsm_fields.append(
            Field(label="root keys on token", value=", ".join(v.hsm.root_keys_on_token) or "-")
        )
        self._row(t, "hsm-state", "Token", hsm_fields, "state", styled(v.hsm.state))
        self._row(
            t,
            "hsm-token",
            "Token",
            hsm_fields,
            "token",
            f"{v.hsm.token_label} ({'embedded' if v.hsm.embedded else 'external'})",
        )
        if v.hsm.root_keys_on_token:
            self._row(
                t, "hsm-keys", "Token", hsm_fields, "keys", ", ".join(v.hsm.root_keys_on_token)
            )
        t.border_subtitle = v.hsm.detail if v.hsm.state != "ok" else ""

        t = self.query_one("#roots", DataTable)
        t.clear()
        for r in v.roots:
            self._row(
                t, r.name, r.name, key_fields(r), r.name, styled(r.state), r.kcv, f"{r.age_days}d"
            )
        if not v.roots:
            self._row(
                t,
                "root-none",
                "Root key",
                [Field(label="root", value="none yet")],
                "none",
                "-",
                "-",
                "-",
            )
        t.border_title = f"Root key: {root_txt}"

        t = self.query_one("#keks", DataTable)
        t.clear()
        for k in v.keks:
            self._row(
                t,
                k.name,
                k.name,
                key_fields(k),
                k.name,
                styled(k.state),
                k.key_class,
                f"{k.age_days}d",
                str(k.objects),
            )
        if not v.keks:
            self._row(
                t,
                "kek-none",
                "KEKs",
                [Field(label="KEKs", value="none yet")],
                "none",
                "-",
                "-",
                "-",
                "-",
            )

        t = self.query_one("#rotations", DataTable)
        t.clear()
        for rot in v.rotations:
            fields = [
                Field(label="key", value=rot.key),
                Field(label="class", value=rot.key_class),
                Field(label="period", value=f"{rot.period_days} days"),
                Field(label="last rotation", value=rot.last_rotation),
                Field(label="due", value=rot.due),
                Field(label="days left", value=str(rot.days_left)),
                Field(label="status", value=rot.status),
            ]
            self._row(
                t,
                f"rot-{rot.key}",
                f"Rotation {rot.key}",
                fields,
                rot.key,
                rot.key_class,
                rot.due,
                str(rot.days_left),
                styled(rot.status),
            )

        t = self.query_one("#custodians", DataTable)
        t.clear()
        if v.custodians is None:
            self._row(
                t,
                "cust-none",
                "Custodians",
                [
                    Field(label="roster", value="no roster yet"),
                    Field(label="next", value="custodians appear after the generate ceremony"),
                ],
                "no roster yet",
                "-",
                "-",
            )
        else:
            for c in v.custodians:
                self._row(
                    t,
                    f"cust-{c.name}",
                    f"Custodian {c.name}",
                    [
                        Field(label="name", value=c.name),
                        Field(label="role", value=c.role),
                        Field(label="last drill", value=c.last_drill),
                        Field(label="status", value=c.status),
                    ],
                    c.name,
                    c.last_drill,
                    styled(c.status),
                )

        t = self.query_one("#alerts", DataTable)
        t.clear()
        for i, a in enumerate(v.alerts):
            self._row(
                t,
                f"alert-{i}",
                "Alert",
                [
                    Field(label="level", value=a.level),
                    Field(label="alert", value=a.text),
                    Field(label="hint", value=a.hint),
                ],
                styled(a.level),
                a.text,
            )
        if not v.alerts:
            self._row(
                t,
                "alert-none",
                "Alerts",
                [Field(label="alerts", value="none")],
                styled("ok"),
                "no alerts",
            )
        t.border_title = f"Alerts ({len(v.alerts)})"
        self.app.data_loaded()  # type: ignore[attr-defined]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if key in self._details:
            title, fields = self._details[key]
            self.app.push_screen(DetailScreen(title, fields))

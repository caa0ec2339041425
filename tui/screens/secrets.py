"""Secrets: every environment's secrets, a detail pane, and the vault's audited actions.

The table lists the secrets grouped by environment (environments never share secrets),
each with its category, class, owner, current version, state and due date; expiry
warnings (30 days ahead) and overdue secrets stand out. The detail pane shows the
selected secret's labels, versions and rotation state. Nothing on this screen decrypts a
value except the explicit reveal (``v``): it asks first, is audited as ``secret get``,
shows the value masked (``m`` shows it), and drops it after :data:`REVEAL_SECONDS`, on
any other selection and when the screen is left.

Put, generate, rotate, delete and restore each ask for confirmation and are audited as
``custody secret`` audits them (:mod:`tui.services.secrets`).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Select, Static

from tui.screens.base import Payload, ServiceScreen
from tui.screens.modals import ConfirmModal, PinPrompt
from tui.services.secrets import (
    MASK,
    SHORT_CATEGORY,
    RevealedValue,
    SecretDetail,
    SecretItem,
    SecretsView,
    secret_services,
)
from tui.services.text import printable

REVEAL_SECONDS = 20.0
PATH_WIDTH = 24
COLUMNS = (("category", 10), ("class", 7), ("owner", 9), ("v", 4), ("state", 10), ("due", 12))
REST = 1 + sum(w for _, w in COLUMNS) + 3  # the other columns, the border and the scrollbar


def path_width(screen_width: int) -> int:
    """The path column: 24 at 80 columns, wider (to 56) on a wider terminal."""
    return max(PATH_WIDTH, min(56, screen_width - REST - 1))


class ViewLoaded(Payload[SecretsView]):
    pass


class DetailLoaded(Payload[SecretDetail]):
    pass


class ValueRevealed(Payload[RevealedValue]):
    pass


class ActionDone(Payload[str]):
    pass


def short_path(path: str, width: int = PATH_WIDTH) -> str:
    """The path as the table shows it: its tail, when longer than the column."""
    return path if len(path) <= width else "\u2026" + path[-(width - 1) :]


def due_text(item: SecretItem) -> Text:
    """The due column: the expiry date, or the warning (yellow) or overdue (red) text."""
    due = item.due
    if not due:
        return Text(" " + (item.expires[:10] if item.state in ("active", "rotating") else "-"))
    return Text(" " + due, style="bold red" if item.days_left < 0 else "yellow")


def state_text(state: str) -> Text:
    style = {"active": "green", "rotating": "cyan", "deprecated": "yellow", "destroyed": "red"}
    label = "deleted" if state == "deprecated" else state
    return Text(" " + label, style=style.get(state, ""))


class SecretForm(ModalScreen[dict[str, str] | None]):
    """Put (a typed value) or generate (made to the category's standard).

    The value field never echoes; it is typed twice and cleared the moment the form
    closes. Returns the fields, or None.
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Save", priority=True),
    ]

    def __init__(
        self,
        kind: str,
        environments: tuple[str, ...],
        categories: tuple[str, ...],
        preset: SecretItem | None,
    ) -> None:
        super().__init__(classes="dialog-screen")
        self.kind = kind  # "put" | "generate"
        self._envs = environments
        self._cats = categories
        self._preset = preset

    def __repr__(self) -> str:
        return f"SecretForm({self.kind}, <fields hidden>)"

    def compose(self) -> ComposeResult:
        p = self._preset
        title = "Store a value you type" if self.kind == "put" else "Generate a new value"
        with Vertical(id="secret-form", classes="dialog"):
            yield Label(title, classes="dialog-title")
            yield Select(
                [(e, e) for e in self._envs],
                value=p.env if p else self._envs[0],
                allow_blank=False,
                id="sf-env",
                compact=True,
            )
            yield Input(p.path if p else "", id="sf-path", placeholder="path", compact=True)
            yield Select(
                [(c, c) for c in self._cats],
                value=p.category if p else Select.BLANK,
                prompt="category (a new secret)",
                id="sf-category",
                compact=True,
            )
            yield Input(p.owner if p else "", id="sf-owner", placeholder="owner", compact=True)
            yield Input(id="sf-prefix", placeholder="API key prefix (optional)", compact=True)
            if self.kind == "put":
                yield Input(password=True, id="sf-value", placeholder="value", compact=True)
                yield Input(password=True, id="sf-again", placeholder="value again", compact=True)
            note = (
                "Checked against the category's rule; never echoed."
                if self.kind == "put"
                else "Made to the category's standard with the token's RNG."
            )
            yield Static(note + " Ctrl+S saves.", classes="dim")
            yield Button("Save", id="sf-go", variant="primary", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sf-value" if self.kind == "put" and self._preset else "#sf-path").focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_submit()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.focus_next()

    def _clear(self) -> None:
        for i in self.query(Input):
            if i.password:
                i.value = ""

    def action_submit(self) -> None:
        out = {
            "env": str(self.query_one("#sf-env", Select).value),
            "path": self.query_one("#sf-path", Input).value.strip(),
            "owner": self.query_one("#sf-owner", Input).value.strip(),
            "prefix": self.query_one("#sf-prefix", Input).value.strip(),
        }
        cat = self.query_one("#sf-category", Select).value
        out["category"] = "" if cat is Select.BLANK else str(cat)
        if not out["path"]:
            self.notify("Give the secret's path.", severity="error")
            return
        if self.kind == "put":
            value = self.query_one("#sf-value", Input).value
            again = self.query_one("#sf-again", Input).value
            if not value:
                self.notify("Type the value.", severity="error")
                return
            if value != again:
                self._clear()
                self.notify("The two values differ; type them again.", severity="error")
                self.query_one("#sf-value").focus()
                return
            out["value"] = value
        self._clear()
        self.dismiss(out)

    def action_cancel(self) -> None:
        self._clear()
        self.dismiss(None)


class RotateForm(ModalScreen[dict[str, str] | None]):
    """The verified rotation's parameters: the super-admin key that signs the record, its
    passphrase (never echoed), the verify command and the overlap."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Rotate", priority=True),
    ]

    def __init__(self, item: SecretItem) -> None:
        super().__init__(classes="dialog-screen")
        self.item = item

    def __repr__(self) -> str:
        return f"RotateForm({self.item.key}, <fields hidden>)"

    def compose(self) -> ComposeResult:
        with Vertical(id="rotate-form", classes="dialog"):
            yield Label(Text(f"Rotate {self.item.key}"), classes="dialog-title")
            yield Input(id="rf-key", placeholder="super-admin key (NAME.key.pem)", compact=True)
            yield Input(password=True, id="rf-pass", placeholder="its passphrase", compact=True)
            yield Input(id="rf-verify", placeholder="verify command (optional)", compact=True)
            yield Input("24h", id="rf-overlap", placeholder="overlap, e.g. 1h, 7d", compact=True)
            yield Static(
                "New value into pending, verify, promote; the old one stays previous for "
                "the overlap. A signed record is written. Ctrl+S rotates.",
                classes="dim",
            )
            yield Button("Rotate", id="rf-go", variant="primary", compact=True)
        yield Footer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_submit()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.focus_next()

    def action_submit(self) -> None:
        out = {
            k: self.query_one(f"#rf-{k}", Input).value.strip() for k in ("key", "verify", "overlap")
        }
        out["passphrase"] = self.query_one("#rf-pass", Input).value
        self.query_one("#rf-pass", Input).value = ""
        if not out["key"]:
            self.notify("Give the super-admin key file.", severity="error")
            return
        self.dismiss(out)

    def action_cancel(self) -> None:
        self.query_one("#rf-pass", Input).value = ""
        self.dismiss(None)


class SecretsScreen(ServiceScreen):
    """The secret store: list, detail, reveal, and the audited actions."""

    BINDINGS = [
        Binding("v", "reveal", "Reveal"),
        Binding("m", "toggle_mask", "Show/mask value", show=False),
        Binding("p", "put", "Put"),
        Binding("g", "generate", "Generate"),
        Binding("r", "rotate", "Rotate"),
        Binding("x", "delete", "Delete"),
        Binding("u", "restore", "Restore"),
        Binding("f5", "refresh", "Refresh", show=False),
        Binding("escape", "hide_value", "Hide value", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.view: SecretsView | None = None
        self.detail: SecretDetail | None = None
        self._items: dict[str, SecretItem] = {}
        self._revealed: RevealedValue | None = None
        self._unmasked = False
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="sec-summary")
        with Vertical(id="sec-body"):
            table: DataTable[Any] = DataTable(id="sec-table", cursor_type="row", cell_padding=0)
            table.border_title = "Secrets by environment"
            yield table
            with VerticalScroll(id="sec-detail"):
                yield Static(Text("Select a secret.", style="dim"), id="sec-facts")
                yield Static("", id="sec-value")
                yield DataTable(id="sec-versions", cursor_type="row", show_cursor=True)
        yield Footer()

    def on_mount(self) -> None:
        self._columns()
        t = self.query_one("#sec-table", DataTable)
        vt = self.query_one("#sec-versions", DataTable)
        vt.border_title = "Versions"
        vt.add_columns("v", "state", "labels", "source", "created")
        vt.display = False
        t.focus()
        self.action_refresh()

    def _columns(self) -> None:
        """(Re)build the table's columns for the terminal's width: no cell padding, each
        cell starts with one space, so the seven columns fit 80 columns."""
        self._path_w = path_width(self.app.size.width)
        t = self.query_one("#sec-table", DataTable)
        t.clear(columns=True)
        t.add_column(" secret", width=self._path_w + 1, key="secret")
        for name, width in COLUMNS:
            t.add_column(" " + name, width=width, key=name)

    def on_resize(self) -> None:
        if path_width(self.app.size.width) != getattr(self, "_path_w", None):
            self._columns()
            if self.view is not None:
                self.on_view_loaded(ViewLoaded(self.view))

    # ------------------------------------------------------------------ loading
    def _svc(self) -> Any:
        return secret_services(self.app)

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False, exclusive=True, group="secrets")
    def load(self) -> None:
        self.post_message(ViewLoaded(self._svc().view()))

    @work(thread=True, exit_on_error=False, exclusive=True, group="secret-detail")
    def load_detail(self, env: str, path: str) -> None:
        self.post_message(DetailLoaded(self._svc().detail(env, path)))

    def on_view_loaded(self, msg: ViewLoaded) -> None:
        v = self.view = msg.value
        t = self.query_one("#sec-table", DataTable)
        keep = self._selected_key()
        t.clear()
        self._items = {i.key: i for i in v.items}
        due = sum(1 for i in v.items if i.due)
        deleted = sum(1 for i in v.items if i.state == "deprecated")
        summary = Text(f"{len(v.items)} secrets in {len(v.environments)} environments")
        if due:
            summary.append(f" \u00b7 {due} due or overdue", style="yellow")
        if deleted:
            summary.append(f" \u00b7 {deleted} deleted (recoverable)", style="yellow")
        self.query_one("#sec-summary", Static).update(summary)
        for env in v.environments:
            items = [i for i in v.items if i.env == env]
            count = f"{len(items)} secret" + ("" if len(items) == 1 else "s")
            t.add_row(
                Text(f" \u25be {env}", style="bold"),
                Text(" " + count, style="dim"),
                key=f"@{env}",
            )
            for i in sorted(items, key=lambda i: i.path):
                cells = (
                    Text("   " + short_path(i.path, self._path_w - 2)),
                    Text(" " + SHORT_CATEGORY.get(i.category, i.category[:9])),
                    Text(" " + i.security_class),
                    Text(" " + printable(i.owner)[:8]),
                    Text(f" v{i.version}" if i.version else " -"),
                    state_text(i.state),
                    due_text(i),
                )
                t.add_row(*cells, key=i.key)
        if keep is not None and keep in self._items:
            t.move_cursor(row=t.get_row_index(keep))
        self._selected()

    def _selected_key(self) -> str | None:
        t = self.query_one("#sec-table", DataTable)
        if not t.row_count:
            return None
        try:
            return str(t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value)
        except Exception:  # noqa: BLE001 - an empty or changing table has no selection
            return None

    def selected(self) -> SecretItem | None:
        key = self._selected_key()
        return self._items.get(key) if key else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "sec-table":
            self._selected()

    def _selected(self) -> None:
        self.action_hide_value()
        item = self.selected()
        vt = self.query_one("#sec-versions", DataTable)
        facts = self.query_one("#sec-facts", Static)
        if item is None:
            vt.display = False
            key = self._selected_key()
            env = key[1:] if key and key.startswith("@") else ""
            n = sum(1 for i in self._items.values() if i.env == env)
            facts.update(
                Text(
                    f"Environment {env}: {n} secrets. p puts a value, g generates one."
                    if env
                    else "No secrets yet: p puts a value, g generates one.",
                    style="dim",
                )
            )
            self.detail = None
            return
        facts.update(self._facts(item, None))
        self.load_detail(item.env, item.path)

    def on_detail_loaded(self, msg: DetailLoaded) -> None:
        d = msg.value
        item = self.selected()
        if item is None or item.key != d.item.key:
            return  # the selection moved on
        self.detail = d
        self.query_one("#sec-facts", Static).update(self._facts(d.item, d))
        vt = self.query_one("#sec-versions", DataTable)
        vt.clear()
        for v in d.versions:
            vt.add_row(
                f"v{v.version}",
                v.state,
                ",".join(v.labels) or "-",
                Text(printable(v.source)[:20]),
                v.created[:10],
                key=str(v.version),
            )
        vt.display = bool(d.versions)
        self._show_value()

    def _facts(self, item: SecretItem, d: SecretDetail | None) -> Text:
        t = Text()
        t.append(f"{item.env}:{item.path}\n", style="bold")
        state = "deleted (soft)" if item.state == "deprecated" else item.state
        rows = [
            ("category", f"{item.category} \u00b7 {item.security_class}"),
            ("owner", printable(item.owner)),
            ("state", state),
        ]
        if d is not None:
            rows[-1] = (
                "state",
                f"{state} \u00b7 " + ("  ".join(f"{k}=v{v}" for k, v in d.labels) or "no labels"),
            )
            if d.previous_until:
                rows.append(("overlap", f"previous served until {d.previous_until[:16]}"))
        rows.append(("expires", f"{item.expires[:10]} ({item.days_left} d)"))
        if item.rotation_failures:
            rows.append(("rotation", f"{item.rotation_failures} failed in a row"))
        if item.state == "deprecated" and item.destroy_after:
            rows.append(("restore", f"until {item.destroy_after[:16]} (u)"))
        for k, v in rows:
            t.append(f"{k:9}", style="dim")
            t.append(f"{v}\n", style=("bold red" if k == "expires" and item.days_left < 0 else ""))
        due = item.due
        if due:
            t.append(f"{due}: rotate it (r)", style="bold red" if item.days_left < 0 else "yellow")
        t.rstrip()
        return t

    # ------------------------------------------------------------------ reveal
    def _show_value(self) -> None:
        box = self.query_one("#sec-value", Static)
        r = self._revealed
        if r is None:
            item = self.selected()
            box.update(
                Text("value    hidden: v reveals it (audited)", style="dim")
                if item is not None and item.state in ("active", "rotating")
                else ""
            )
            return
        t = Text()
        t.append(f"value v{r.version} ", style="bold")
        if self._unmasked:
            t.append(r.value, style="reverse")
            t.append("\nm masks it; it is cleared in a few seconds and on leaving.", style="dim")
        else:
            t.append(MASK)
            t.append("\nm shows it; Escape hides it; cleared on leaving.", style="dim")
        box.update(t)

    def action_reveal(self) -> None:
        item = self.selected()
        if item is None:
            self.notify("Select a secret first.", severity="warning")
            return
        version = None
        vt = self.query_one("#sec-versions", DataTable)
        if self.focused is vt and vt.row_count:
            version = int(str(vt.coordinate_to_cell_key(vt.cursor_coordinate).row_key.value))
        which = f"v{version}" if version is not None else "its current version"

        def answer(yes: bool | None) -> None:
            if yes:
                self._with_pin(lambda pin: self.reveal(item.env, item.path, version, pin))

        self.app.push_screen(
            ConfirmModal(
                f"Reveal {item.key} ({which})?",
                "The read is audited as 'secret get'. The value is shown masked (m shows "
                f"it) and cleared after {int(REVEAL_SECONDS)} s, on another selection, and "
                "when you leave this screen.",
            ),
            answer,
        )

    @work(thread=True, exit_on_error=False, exclusive=True, group="secret-reveal")
    def reveal(self, env: str, path: str, version: int | None, pin: str | None) -> None:
        self._login(pin)
        del pin
        self.post_message(ValueRevealed(self._svc().reveal(env, path, version)))

    def on_value_revealed(self, msg: ValueRevealed) -> None:
        item = self.selected()
        r = msg.value
        if item is None or (item.env, item.path) != (r.env, r.path):
            r.clear()  # the selection moved on while it was read
            return
        self.action_hide_value()
        self._revealed, self._unmasked = r, False
        self._timer = self.set_timer(REVEAL_SECONDS, self.action_hide_value)
        self._show_value()

    def action_toggle_mask(self) -> None:
        if self._revealed is not None:
            self._unmasked = not self._unmasked
            self._show_value()

    def action_hide_value(self, *, redraw: bool = True) -> None:
        """Forget the revealed value (timer, Escape, another selection, leaving)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._revealed is not None:
            self._revealed.clear()
            self._revealed = None
            self._unmasked = False
            if redraw:
                self._show_value()

    def on_screen_suspend(self) -> None:
        self.action_hide_value()

    def on_unmount(self) -> None:
        self.action_hide_value(redraw=False)

    # ------------------------------------------------------------------ actions
    def _with_pin(self, then: Any) -> None:
        """Run *then(pin)*: with the session's PIN, else after the PIN prompt (the PIN is
        checked against the token and kept by the services' PIN box only if it works)."""
        services = self.app.services  # type: ignore[attr-defined]
        if services.has_pin():
            then(None)
            return

        def got(pin: str | None) -> None:
            if pin:
                then(pin)

        self.app.push_screen(PinPrompt(), got)

    def _login(self, pin: str | None) -> None:
        """In a worker: a PIN typed at the prompt is checked against the token and kept by
        the app's PIN box only if it works (the secret services read it from there)."""
        if pin is not None:
            self.app.services.login(pin)  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, group="secret-action")
    def act(self, what: str, args: tuple[Any, ...], pin: str | None) -> None:
        self._login(pin)
        del pin
        msg = getattr(self._svc(), what)(*args)
        del args
        self.post_message(ActionDone(msg))

    def on_action_done(self, msg: ActionDone) -> None:
        self.notify(printable(msg.value))
        self.load()

    def _form(self, kind: str) -> None:
        view = self.view
        if view is None:
            return
        preset = self.selected()

        def got(fields: dict[str, str] | None) -> None:
            if not fields:
                return
            env, path = fields["env"], fields["path"]
            what = "a typed value" if kind == "put" else "a generated value"
            new = f"{env}:{path}" not in self._items
            detail = (
                f"A new secret ({fields['category'] or 'no category'}, owner "
                f"{fields['owner'] or '?'})."
                if new
                else "A new current version; the old one becomes previous."
            )

            def answer(yes: bool | None) -> None:
                if not yes:
                    fields.clear()
                    return
                cat, owner, prefix = fields["category"], fields["owner"], fields["prefix"]
                args: tuple[Any, ...] = (
                    (env, path, fields.pop("value"), cat, owner, prefix)
                    if kind == "put"
                    else (env, path, cat, owner, prefix)
                )
                fields.clear()
                self._with_pin(lambda pin: self.act(kind, args, pin))

            self.app.push_screen(
                ConfirmModal(f"Store {what} at {env}:{path}?", detail + " Audited."), answer
            )

        self.app.push_screen(SecretForm(kind, view.environments, view.categories, preset), got)

    def action_put(self) -> None:
        self._form("put")

    def action_generate(self) -> None:
        self._form("generate")

    def action_rotate(self) -> None:
        item = self.selected()
        if item is None:
            self.notify("Select a secret first.", severity="warning")
            return

        def got(f: dict[str, str] | None) -> None:
            if not f:
                return
            args = (item.env, item.path, f["key"], f.pop("passphrase"), f["verify"], f["overlap"])
            check = f"verified by {f['verify']!r}" if f["verify"] else "with no verify command"

            def answer(yes: bool | None) -> None:
                if yes:
                    self._with_pin(lambda pin: self.act("rotate", args, pin))

            self.app.push_screen(
                ConfirmModal(
                    f"Rotate {item.key} now?",
                    f"A new value, {check}, becomes current; the old one stays previous "
                    f"for {f['overlap'] or '24h'}. Signed record; audited.",
                ),
                answer,
            )

        self.app.push_screen(RotateForm(item), got)

    def action_delete(self) -> None:
        item = self.selected()
        if item is None:
            self.notify("Select a secret first.", severity="warning")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.act("delete", (item.env, item.path), None)

        self.app.push_screen(
            ConfirmModal(
                f"Delete {item.key}?",
                "A soft delete: reads are refused and reported, and u restores it until "
                "its recovery window ends; then it is crypto-shredded. Audited.",
            ),
            answer,
        )

    def action_restore(self) -> None:
        item = self.selected()
        if item is None or item.state != "deprecated":
            self.notify("Select a deleted secret to restore.", severity="warning")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.act("restore", (item.env, item.path), None)

        self.app.push_screen(
            ConfirmModal(f"Restore {item.key}?", "Its versions are served again. Audited."),
            answer,
        )

"""Secrets: every environment's secrets, a detail pane, and the vault's audited actions.

The tree holds the secrets by environment (environments never share secrets) and path
(``prod`` > ``payments`` > ``stripe`` > ``api-key``), each leaf with its category, current
version, state and due date; expiry warnings (30 days ahead) and overdue secrets stand
out, and a branch holding one is marked. Arrows move (left/right fold and unfold),
Enter or space folds a branch; the highlighted leaf is the selected secret, whose labels,
versions and rotation state the detail pane shows. Nothing on this screen decrypts a
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
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Select, Static, Tree
from textual.widgets.tree import TreeNode

from tui.screens.base import Payload, ServiceScreen
from tui.screens.modals import ConfirmModal, PinPrompt
from tui.services.errors import AccessDenied, needs_totp
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
NAME_WIDTH = 40
INFO = ((" ", 9), (" ", 4), (" ", 10), (" ", 12))  # category, version, state, due
INFO_WIDTH = sum(w for _, w in INFO)
GUIDE = 2  # the tree's indent per level
REST = 2 + 1 + 1  # the border, the scrollbar and a spare column


def name_width(screen_width: int) -> int:
    """Where a leaf's facts start: column 40 at 80 columns, further right (to 56) on a
    wider terminal."""
    return max(24, min(56, screen_width - REST - INFO_WIDTH))


class ViewLoaded(Payload[SecretsView]):
    pass


class DetailLoaded(Payload[SecretDetail]):
    pass


class ValueRevealed(Payload[RevealedValue]):
    pass


class ActionDone(Payload[str]):
    pass


class NeedsTotp(Payload[tuple[str, tuple[Any, ...]]]):
    """Access control asks a TOTP code of this call: (what, args), to run again with it."""


def short_name(name: str, width: int) -> str:
    """A path segment as the tree shows it: its tail, when longer than its room."""
    width = max(width, 4)
    return name if len(name) <= width else "\u2026" + name[-(width - 1) :]


class _Branch:
    """A node of the tree being built: its children by segment, and the secret that
    ends at it (a path can be both a secret and the prefix of others)."""

    def __init__(self) -> None:
        self.children: dict[str, _Branch] = {}
        self.item: SecretItem | None = None

    def items(self) -> list[SecretItem]:
        out = [self.item] if self.item is not None else []
        for c in self.children.values():
            out.extend(c.items())
        return out


def due_mark(items: list[SecretItem]) -> Text:
    """The marker on a branch that holds something due (red when overdue)."""
    due = [i for i in items if i.due]
    if not due:
        return Text("")
    overdue = any(i.days_left < 0 for i in due)
    return Text(f" \u25cf {len(due)} due", style="bold red" if overdue else "yellow")


class SecretTree(Tree[str]):
    """The secrets tree: arrows move; left folds (or goes to the parent), right unfolds;
    Enter or space folds and unfolds a branch."""

    BINDINGS = [
        Binding("left", "fold", "Fold", show=False),
        Binding("right", "unfold", "Unfold", show=False),
    ]

    def action_fold(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and node.is_expanded:
            node.collapse()
        elif node.parent is not None and not node.parent.is_root:
            self.move_cursor(node.parent)

    def action_unfold(self) -> None:
        node = self.cursor_node
        if node is not None and node.allow_expand and not node.is_expanded:
            node.expand()


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
            yield Label(Text(f"Rotate {printable(self.item.key)}"), classes="dialog-title")
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
        self._tree_nodes: dict[str, TreeNode[str]] = {}  # by secret key, or @env[:prefix]
        self._folded: set[str] = set()  # the branches the operator folded, kept on reload
        self._name_w = NAME_WIDTH

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="sec-summary")
        with Vertical(id="sec-body"):
            tree = SecretTree("secrets", id="sec-tree")
            tree.show_root = False
            tree.guide_depth = GUIDE
            tree.auto_expand = True
            tree.border_title = "Secrets by environment and path"
            yield tree
            with VerticalScroll(id="sec-detail"):
                yield Static(Text("Select a secret.", style="dim"), id="sec-facts")
                yield Static("", id="sec-value")
                yield DataTable(id="sec-versions", cursor_type="row", show_cursor=True)
        yield Footer()

    def on_mount(self) -> None:
        self._name_w = name_width(self.app.size.width)
        vt = self.query_one("#sec-versions", DataTable)
        vt.border_title = "Versions"
        vt.add_columns("v", "state", "labels", "source", "created")
        vt.display = False
        self.query_one("#sec-tree", SecretTree).focus()
        self.action_refresh()

    def on_resize(self) -> None:
        if name_width(self.app.size.width) != self._name_w:
            self._name_w = name_width(self.app.size.width)
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
        tree = self.query_one("#sec-tree", SecretTree)
        keep = self._selected_key()
        self._items = {i.key: i for i in v.items}
        due = sum(1 for i in v.items if i.due)
        deleted = sum(1 for i in v.items if i.state == "deprecated")
        summary = Text(f"{len(v.items)} secrets in {len(v.environments)} environments")
        if due:
            summary.append(f" \u00b7 {due} due or overdue", style="yellow")
        if deleted:
            summary.append(f" \u00b7 {deleted} deleted (recoverable)", style="yellow")
        if v.hidden:
            summary.append(f" \u00b7 {v.hidden} hidden by access control", style="red")
        self.query_one("#sec-summary", Static).update(summary)
        tree.clear()
        self._tree_nodes = {}
        for env in v.environments:
            top = _Branch()
            for i in v.items:
                if i.env != env:
                    continue
                b = top
                for seg in i.path.split("/"):
                    b = b.children.setdefault(seg, _Branch())
                b.item = i
            n = len(top.items())
            label = Text(env, style="bold")
            label.append(f"  {n} secret" + ("" if n == 1 else "s"), style="dim")
            label.append_text(due_mark(top.items()))
            node = tree.root.add(label, data=f"@{env}", expand=f"@{env}" not in self._folded)
            self._tree_nodes[f"@{env}"] = node
            self._grow(node, top, env, "", 1)
        tree.root.expand()
        _ = tree.last_line  # lay the lines out, so that the nodes know their lines
        target = self._tree_nodes.get(keep) if keep is not None else None
        if target is not None:
            tree.move_cursor(target)
        elif tree.root.children:
            tree.move_cursor(tree.root.children[0])
        self._selected()

    def _grow(
        self, parent: TreeNode[str], branch: _Branch, env: str, prefix: str, depth: int
    ) -> None:
        """Add *branch*'s children under *parent*: a secret is a leaf (or, when it is also
        the prefix of others, a branch that is itself selectable)."""
        for seg in sorted(branch.children):
            b = branch.children[seg]
            path = f"{prefix}/{seg}" if prefix else seg
            room = self._name_w - depth * GUIDE - (2 if b.children else 0)
            label = Text(short_name(printable(seg), room))
            if b.item is not None:
                label.pad_right(max(1, room - len(label)))
                label.append_text(self._info(b.item))
            if b.children:
                if b.item is None:
                    label.append(f"  {len(b.items())}", style="dim")
                label.append_text(due_mark(b.items()))
                key = b.item.key if b.item is not None else f"@{env}:{path}"
                node = parent.add(label, data=key, expand=key not in self._folded)
                self._grow(node, b, env, path, depth + 1)
            elif b.item is not None:
                key = b.item.key
                node = parent.add_leaf(label, data=key)
            self._tree_nodes[key] = node

    def _info(self, i: SecretItem) -> Text:
        """A leaf's facts after its name: category, version, state, due date."""
        t = Text(" " + SHORT_CATEGORY.get(i.category, i.category[:8])[:8], style="dim")
        t.pad_right(INFO[0][1] - len(t))
        t.append(f" v{i.version}" if i.version else " -")
        t.pad_right(INFO[0][1] + INFO[1][1] - len(t))
        t.append_text(state_text(i.state))
        t.pad_right(INFO[0][1] + INFO[1][1] + INFO[2][1] - len(t))
        t.append_text(due_text(i))
        return t

    def on_tree_node_collapsed(self, event: Tree.NodeCollapsed[str]) -> None:
        if event.node.data:
            self._folded.add(event.node.data)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[str]) -> None:
        if event.node.data:
            self._folded.discard(event.node.data)

    def _selected_key(self) -> str | None:
        tree = self.query_one("#sec-tree", SecretTree)
        node = tree.cursor_node
        return node.data if node is not None else None

    def selected(self) -> SecretItem | None:
        key = self._selected_key()
        return self._items.get(key) if key else None

    def select_key(self, key: str) -> bool:
        """Move the tree's cursor to *key* (a secret's ``env:path``), unfolding its
        branches; False if the tree does not hold it."""
        node = self._tree_nodes.get(key)
        if node is None:
            return False
        tree = self.query_one("#sec-tree", SecretTree)
        up = node.parent
        while up is not None and not up.is_root:
            up.expand()
            up = up.parent
        _ = tree.last_line
        tree.move_cursor(node)
        return True

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        if event.control.id == "sec-tree":
            self._selected()

    def _selected(self) -> None:
        self.action_hide_value()
        item = self.selected()
        vt = self.query_one("#sec-versions", DataTable)
        facts = self.query_one("#sec-facts", Static)
        if item is None:
            vt.display = False
            self.query_one("#sec-value", Static).update("")
            key = self._selected_key() or ""
            where = key[1:] if key.startswith("@") else ""
            env, _, prefix = where.partition(":")
            n = sum(
                1
                for i in self._items.values()
                if i.env == env and (not prefix or i.path.startswith(prefix + "/"))
            )
            facts.update(
                Text(
                    f"{'Environment ' + env if not prefix else where}: {n} secret"
                    + ("" if n == 1 else "s")
                    + ". Enter or space folds it; p puts a value, g generates one."
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
        t.append(printable(f"{item.env}:{item.path}") + "\n", style="bold")
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
            t.append(printable(r.value), style="reverse")  # control characters escaped
            t.append("\nm masks it; it is cleared in a few seconds and on leaving.", style="dim")
        else:
            t.append(MASK)  # one line, so that the pane fits 80x24
            t.append("  m shows it \u00b7 Esc hides it", style="dim")
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
                f"Reveal {printable(item.key)} ({which})?",
                "The read is audited as 'secret get'. The value is shown masked (m shows "
                f"it) and cleared after {int(REVEAL_SECONDS)} s, on another selection, and "
                "when you leave this screen.",
            ),
            answer,
        )

    def reveal(self, env: str, path: str, version: int | None, pin: str | None) -> None:
        self.act("reveal", (env, path, version), pin)

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
    def act(
        self, what: str, args: tuple[Any, ...], pin: str | None, totp: str | None = None
    ) -> None:
        """Run the service call *what*. Where access control asks a TOTP code of this
        action (super-admin actions in the ``always`` MFA mode, or an enrolled operator)
        and none was given, the code is asked for and the call made again with it; the
        denial is in the audit log, as the CLI's would be."""
        self._login(pin)
        del pin
        try:
            out = getattr(self._svc(), what)(*args, mfa_code=totp)
        except AccessDenied as err:
            if totp is None and needs_totp(err):
                self.post_message(NeedsTotp((what, args)))
                return
            raise
        finally:
            del totp
        if what == "reveal":
            self.post_message(ValueRevealed(out))
        else:
            self.post_message(ActionDone(out))

    def on_needs_totp(self, msg: NeedsTotp) -> None:
        what, args = msg.value

        def got(code: str | None) -> None:
            if code:
                self.act(what, args, None, code.strip())

        self.app.push_screen(PinPrompt("TOTP code from your authenticator"), got)

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
                    f"Rotate {printable(item.key)} now?",
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
                f"Delete {printable(item.key)}?",
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
            ConfirmModal(
                f"Restore {printable(item.key)}?", "Its versions are served again. Audited."
            ),
            answer,
        )

"""The form that starts a ceremony: kind, coordinator key, and the kind's parameters.

Only public parameters are typed here; the coordinator's passphrase is asked next, in the
non-echoing prompt.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static

KINDS = ("recover", "generate", "rotate-root", "reshare", "emergency-rotate", "drill")
NEEDS = {
    "generate": ("custodians", "scheme", "out"),
    "reshare": ("custodians", "scheme", "out"),
    "emergency-rotate": ("reason",),
}


class StartModal(ModalScreen[dict[str, Any] | None]):
    """Returns ``{"kind", "key", "params"}`` or None."""

    AUTO_FOCUS = "#start-key"

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "start", "Start", priority=True),
    ]

    def __init__(self, kind: str = "recover") -> None:
        super().__init__(classes="dialog-screen")
        self._kind = kind

    def compose(self) -> ComposeResult:
        with Vertical(id="start-dialog", classes="dialog"):
            yield Label("Start a ceremony", classes="dialog-title")
            # compact fields: the whole form, Start included, fits 80x24
            yield Select(
                [(k, k) for k in KINDS],
                value=self._kind,
                allow_blank=False,
                id="start-kind",
                compact=True,
            )
            for f, hint in (
                ("key", "coordinator key file (NAME.key.pem)"),
                ("custodians", "custodians, in share order"),
                ("scheme", "scheme: T (T of N) or 2/2,2/2,2/2:2"),
                ("out", "directory for share files and cards"),
                ("reason", "reason (emergency rotation)"),
            ):
                yield Input(id=f"start-{f}", placeholder=hint, compact=True)
            yield Static("Ctrl+S or Start; the key's passphrase is asked next.", classes="dim")
            yield Button("Start", id="start-go", variant="primary", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self._fields()

    def on_select_changed(self, event: Select.Changed) -> None:
        self._kind = str(event.value)
        self._fields()

    def _fields(self) -> None:
        need = NEEDS.get(self._kind, ())
        for f in ("custodians", "scheme", "out", "reason"):
            self.query_one(f"#start-{f}", Input).display = f in need

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_start()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        shown = [i for i in self.query(Input) if i.display]
        if all(i.value.strip() for i in shown):
            self.action_start()  # Enter in the last missing field starts
        else:
            next(i for i in shown if not i.value.strip()).focus()

    def action_start(self) -> None:
        val = {
            f: self.query_one(f"#start-{f}", Input).value.strip()
            for f in ("key", "custodians", "scheme", "out", "reason")
        }
        if not val["key"]:
            self.notify("Give the coordinator's key file.", severity="error")
            return
        params = {k: val[k] for k in NEEDS.get(self._kind, ())}
        self.dismiss({"kind": self._kind, "key": val["key"], "params": params})

    def action_cancel(self) -> None:
        self.dismiss(None)

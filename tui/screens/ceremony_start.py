"""The form that starts a ceremony: kind, coordinator key, and the kind's parameters.

Only public parameters are typed here; the coordinator's passphrase is asked next, in the
non-echoing prompt. A generate or reshare seals each share to its custodian's enrolled
X25519 key (the custodians' ``NAME.pub.json`` files or their directory, as ``--seal-to``);
plain shares need the explicit "plain shares" switch, which the transcript records.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static

KINDS = ("recover", "generate", "rotate-root", "reshare", "emergency-rotate", "drill")
NEEDS = {
    "generate": ("custodians", "scheme", "out", "seal_to"),
    "reshare": ("custodians", "scheme", "out", "seal_to"),
    "emergency-rotate": ("reason",),
}
FIELDS = ("key", "custodians", "scheme", "out", "seal_to", "reason")
SEALED = ("generate", "reshare")


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
                ("out", "directory for the sealed shares"),
                ("seal_to", "seal to: custodians' NAME.pub.json (a directory or files)"),
                ("reason", "reason (emergency rotation)"),
            ):
                yield Input(id=f"start-{f}", placeholder=hint, compact=True)
            yield Checkbox(
                "plain shares instead (not sealed; recorded)",
                id="start-plain",
                compact=True,
            )
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
        for f in FIELDS[1:]:
            self.query_one(f"#start-{f}", Input).display = f in need
        self.query_one("#start-plain", Checkbox).display = self._kind in SEALED
        self._plain_changed()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._plain_changed()

    def _plain_changed(self) -> None:
        """Plain shares: no seal-to field (the two are exclusive), and the out directory
        then receives the words and cards."""
        plain = self.query_one("#start-plain", Checkbox).value
        seal = self.query_one("#start-seal_to", Input)
        seal.disabled = plain
        out = self.query_one("#start-out", Input)
        out.placeholder = (
            "directory for share files and cards (plain)"
            if plain
            else "directory for the sealed shares"
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_start()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        shown = [i for i in self.query(Input) if i.display and not i.disabled]
        if all(i.value.strip() for i in shown):
            self.action_start()  # Enter in the last missing field starts
        else:
            next(i for i in shown if not i.value.strip()).focus()

    def action_start(self) -> None:
        val = {f: self.query_one(f"#start-{f}", Input).value.strip() for f in FIELDS}
        if not val["key"]:
            self.notify("Give the coordinator's key file.", severity="error")
            return
        params: dict[str, Any] = {k: val[k] for k in NEEDS.get(self._kind, ())}
        if self._kind in SEALED:
            params["plain_shares"] = bool(self.query_one("#start-plain", Checkbox).value)
            if params["plain_shares"]:
                params["seal_to"] = ""
            elif not params["seal_to"]:
                self.notify(
                    "Give the custodians' NAME.pub.json (seal to), or tick plain shares.",
                    severity="error",
                )
                self.query_one("#start-seal_to").focus()
                return
        self.dismiss({"kind": self._kind, "key": val["key"], "params": params})

    def action_cancel(self) -> None:
        self.dismiss(None)

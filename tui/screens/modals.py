"""Typed modal prompts: error, PIN, confirm, detail, and help.

The PIN prompt is an ``Input(password=True)``: it never echoes, its value is cleared the
moment it is submitted, and it is handed to the caller through ``dismiss`` only, never
kept on a reactive or logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Static

from tui.services.home import Field
from tui.services.text import printable_lines


class ErrorModal(ModalScreen[None]):
    """A CustodyError: its title and its hint."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("enter", "close", "OK", show=False)]

    def __init__(self, title: str, hint: str) -> None:
        super().__init__(classes="dialog-screen")
        self._title = title
        self._hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(id="error-dialog", classes="dialog"):
            # plain text: an error may quote a bundle or a log (never parsed as markup)
            title, hint = printable_lines(self._title), printable_lines(self._hint or "")
            yield Label(Text(title), id="error-title", classes="dialog-title")
            yield Static(Text(hint), id="error-hint")
            yield Button("OK", id="error-ok", variant="error")
        yield Footer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class PinPrompt(ModalScreen[str | None]):
    """Ask for the token PIN. Returns it via ``dismiss``; Escape returns ``None``."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, what: str = "token user PIN") -> None:
        super().__init__(classes="dialog-screen")
        self._what = what

    def __repr__(self) -> str:
        return "PinPrompt(<hidden>)"

    def compose(self) -> ComposeResult:
        with Vertical(id="pin-dialog", classes="dialog"):
            yield Label(f"Enter the {self._what}", classes="dialog-title")
            yield Static("It is not echoed, stored or logged.", classes="dim")
            secret = "passphrase" if "passphrase" in self._what else "PIN"
            yield Input(password=True, id="pin-input", placeholder=secret)
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.input.value
        event.input.value = ""
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.query_one(Input).value = ""
        self.dismiss(None)


class ConfirmModal(ModalScreen[bool]):
    """Yes/no. ``y``/Enter confirms, ``n``/Escape declines."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self._q = question
        self._detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog", classes="dialog"):
            yield Label(self._q, classes="dialog-title")
            if self._detail:
                yield Static(self._detail)
            yield Button("Yes (y)", id="yes", variant="primary")
            yield Button("No (n)", id="no")
        yield Footer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class DetailScreen(ModalScreen[None]):
    """Label/value pairs of one item (a key version, a rotation, an alert, a check ...)."""

    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, title: str, fields: Sequence[Field]) -> None:
        super().__init__(classes="dialog-screen")
        self._title = title
        self._fields = tuple(fields)

    def compose(self) -> ComposeResult:
        with Vertical(id="detail-dialog", classes="dialog"):
            yield Label(self._title, classes="dialog-title")
            table: DataTable[Any] = DataTable(
                id="detail-table", cursor_type="row", show_header=False
            )
            yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#detail-table", DataTable)
        table.add_columns("field", "value")
        for f in self._fields:
            table.add_row(Text(f.label, style="bold"), Text(f.value))  # plain, never markup
        table.focus()

    def action_close(self) -> None:
        self.dismiss(None)


HELP_TEXT = """\
[b]Moving around[/b]
  Tab / Shift+Tab   move between panels and fields
  Up / Down         move within a table
  Enter             open the selected item's detail
  Escape            close a dialog, or leave a text field
  F1                this help, even inside a text field

[b]Screens[/b]
  d  Dashboard: token, root and KEK versions, rotations, custodians, alerts
  k  Keys: inventory by class, and the rotation calendar
  a  Auditor: verify a transcript bundle offline against pinned keys
  c  Ceremonies: start (n), resume (o) or abort (Ctrl+X) a ceremony, hand in
     shares, sign approvals, show the remote offer (Ctrl+R) and share cards
  l  Audit log: follow it live (f), filter (/), entry detail (Enter),
     inclusion proof of the selected entry (p), pin a trust key (Ctrl+T),
     export the proof (Ctrl+S)
  j  Re-key: jobs with live progress, KEK retirement stages, due dates;
     start a job (s) or rotate due KEKs first (u), after confirming the plan
  e  Secrets: by environment, with due dates; reveal a value (v, audited;
     m shows it masked), put (p), generate (g), rotate (r), delete (x),
     restore (u)
  G  Access: requests with their countdowns, sign one with your key (s),
     request (n); grants, revoke one (x, after confirming)
  !  Alerts, with the audit entries behind each; acknowledge (x)
  C  Compliance report: sections and their findings
  S  Services: service principals, last access, versions read, rotation
  t  switch the light/dark theme      q or Ctrl+Q  quit

Secrets: PINs are typed into prompts that never echo and are never stored on screen.
"""


class HelpScreen(ModalScreen[None]):
    """The key bindings of the screen underneath, plus how to move around."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, under: Screen[Any]) -> None:
        super().__init__(classes="dialog-screen")
        self._rows: list[tuple[str, str]] = []
        seen = set()
        for key, active in under.active_bindings.items():
            b = active.binding
            if not b.description or key in seen:
                continue
            seen.add(key)
            self._rows.append((b.key_display or key, b.description))

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog", classes="dialog"):
            yield Label("Help", classes="dialog-title")
            yield Static(HELP_TEXT, id="help-text")
            table: DataTable[Any] = DataTable(id="help-keys", cursor_type="none", show_header=True)
            yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#help-keys", DataTable)
        table.add_columns("key", "action on this screen")
        for key, desc in self._rows:
            table.add_row(key, desc)

    def action_close(self) -> None:
        self.dismiss(None)


class TextPrompt(ModalScreen[str | None]):
    """Ask for one line of (non-secret) text, such as a path."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, value: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self._q = question
        self._value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="text-dialog", classes="dialog"):
            yield Label(self._q, classes="dialog-title")
            yield Input(value=self._value, id="text-input")
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)

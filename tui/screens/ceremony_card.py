"""A custodian's share card: words, the envelope's QR in the terminal, export to a file.

This screen shows share words on purpose: it is for the custodian who receives the
share. The QR is rendered with half-block characters (``custody.shares.card.qr_terminal``)
and scrolls when the terminal is smaller than the code.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Header, Static

from tui.screens.base import ServiceScreen
from tui.screens.modals import TextPrompt
from tui.services.ceremony import CardView, ceremony_services
from tui.services.ceremony_remote import QR_STYLE


class CardLoaded(Message):
    def __init__(self, card: CardView) -> None:
        super().__init__()
        self.card = card


class CardExported(Message):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path


def words_text(words: tuple[str, ...]) -> Text:
    out = Text()
    per = -(-len(words) // 2)
    for row in range(per):
        for col in range(2):
            i = col * per + row
            if i < len(words):
                out.append(f"{i + 1:>2} ", style="dim")
                out.append(f"{words[i]:<10}", style="bold")
        out.append("\n")
    return out


class CardScreen(ServiceScreen):
    """One custodian's card. ``e`` exports it (PNG, SVG or PDF by the file suffix)."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("e", "export", "Export")]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.card_name = name
        self.card: CardView | None = None
        self.exported: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static(f"Share card of {self.card_name}: for their eyes only", id="card-title")
        with VerticalScroll(id="card-body"):
            with Horizontal(id="card-top"):
                yield Static("", id="card-words")
                yield Static("", id="card-lines")
            yield Static("", id="card-qr")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False)
    def load(self) -> None:
        self.post_message(CardLoaded(ceremony_services(self.app).card(self.card_name)))

    @work(thread=True, exit_on_error=False)
    def export(self, path: str) -> None:
        p = ceremony_services(self.app).export_card(self.card_name, path)
        self.post_message(CardExported(str(p)))

    def on_card_loaded(self, msg: CardLoaded) -> None:
        self.card = msg.card
        self.query_one("#card-words", Static).update(words_text(msg.card.words))
        self.query_one("#card-lines", Static).update("\n".join(msg.card.lines))
        self.query_one("#card-qr", Static).update(Text(msg.card.qr, style=QR_STYLE))

    def on_card_exported(self, msg: CardExported) -> None:
        self.exported.append(msg.path)
        self.notify(f"card written to {msg.path}")

    def action_export(self) -> None:
        def got(path: str | None) -> None:
            if path:
                self.export(path)

        self.app.push_screen(
            TextPrompt("Export the card to (.png, .svg or .pdf)", f"{self.card_name}.card.pdf"), got
        )

    def action_close(self) -> None:
        self.dismiss(None)

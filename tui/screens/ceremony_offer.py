"""The transport offer of the running ceremony: text, terminal QR and expiry countdown.

The coordinator sends this to a remote custodian, who seals their share to it with
``custody share send --offer OFFER SHARE --envelope ENV``. Everything on this screen is
public (the offer is signed by the coordinator; its private half stays sealed on the HSM).

The text is drawn in hard lines of 64 characters with no scrollbar beside it, so that it
copies from the terminal undamaged (the reader ignores the line breaks); ``w`` writes it to
a file instead. The QR (half blocks, ``custody.shares.card.qr_terminal``) is shown below
the text when the terminal is tall enough, and alone on a full screen with ``z``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from tui.screens.base import ServiceScreen
from tui.services.ceremony import OfferView
from tui.services.ceremony_remote import QR_STYLE, offer_lines, write_offer


def offer_header(o: OfferView, now: int) -> Text:
    left = o.seconds_left(now)
    when = datetime.fromtimestamp(o.expires, UTC).strftime("%H:%M:%S UTC")
    out = Text("Remote offer", style="bold")
    out.append(f" epoch {o.epoch}, expires {when} ", style="dim")
    out.append(
        "expired" if left == 0 else f"({left // 60}:{left % 60:02d} left)",
        style="red" if left == 0 else ("yellow" if left < 120 else "green"),
    )
    return out


def qr_size(qr: str) -> tuple[int, int]:
    rows = qr.splitlines()
    return (max((len(r) for r in rows), default=0), len(rows))


class OfferScreen(ServiceScreen):
    """Shows one offer; Escape returns to the ceremony (paste the blob there)."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("w", "write", "Copy to file"),
        Binding("z", "qr", "QR alone"),
    ]

    def __init__(self, offer: OfferView, now: Callable[[], int]) -> None:
        super().__init__()
        self.offer = offer
        self._now = now
        self.written: str | None = None  # the last file written (for tests)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="offer-head")
        with Vertical(id="offer-body"):
            yield Static(Text(f"session {self.offer.session}"), id="offer-session")
            yield Static(
                Text(
                    "The custodian runs: custody share send --offer OFFER SHARE --envelope "
                    "ENV --trust COORDINATOR.pub.json, then reads the SAS words with you.",
                    style="dim",
                ),
                id="offer-help",
            )
            yield Static(
                Text("\n".join(offer_lines(self.offer.text)), no_wrap=True, overflow="ignore"),
                id="offer-text",
            )
            yield Static("", id="offer-qr-note")
            yield Static(Text(self.offer.qr, style=QR_STYLE, no_wrap=True), id="offer-qr")
        yield Footer()

    def on_mount(self) -> None:
        self._tick()
        self.set_interval(1.0, self._tick)
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """The QR below the text only when all of it fits; else z shows it alone."""
        w, h = qr_size(self.offer.qr)
        lines = len(offer_lines(self.offer.text))
        # header, countdown, session, two lines of help, a blank line, the text, the footer
        room_w, room_h = self.size.width, self.size.height - 1 - 1 - 1 - 2 - 1 - lines - 1
        fits = w + 2 <= room_w and h <= room_h
        self.query_one("#offer-qr").display = fits
        note = self.query_one("#offer-qr-note", Static)
        note.display = not fits
        note.update(Text(f"z shows the QR alone ({w}x{h}); w copies the text to a file."))

    def _tick(self) -> None:
        self.query_one("#offer-head", Static).update(offer_header(self.offer, self._now()))

    def action_close(self) -> None:
        self.app.pop_screen()

    def action_qr(self) -> None:
        self.app.push_screen(QRScreen(self.offer))

    def action_write(self) -> None:
        from tui.screens.modals import TextPrompt

        def got(path: str | None) -> None:
            if path:
                self._write(path)

        default = f"offer-{self.offer.session}.txt"
        self.app.push_screen(TextPrompt("Write the offer text to the file", default), got)

    @work(thread=True, exit_on_error=False, group="offer-write")
    def _write(self, path: str) -> None:
        p = write_offer(self.offer.text, path)  # a ConfigError goes to the error modal
        self.written = str(p)
        self.app.call_from_thread(
            self.notify, f"Offer written to {p}: custody share send --offer {p.name} ..."
        )


class QRScreen(Screen[None]):
    """The offer's QR alone, on the whole terminal (no header, no footer)."""

    BINDINGS = [Binding("escape,z,q", "close", "Close", show=False)]

    def __init__(self, offer: OfferView) -> None:
        super().__init__()
        self.offer = offer

    def compose(self) -> ComposeResult:
        yield Static("", id="qr-note")
        yield Static(Text(self.offer.qr, style=QR_STYLE, no_wrap=True), id="qr-alone")

    def on_mount(self) -> None:
        self.on_resize()

    def on_resize(self) -> None:
        w, h = qr_size(self.offer.qr)
        note = self.query_one("#qr-note", Static)
        if w > self.size.width or h > self.size.height - 1:
            note.update(
                Text(
                    f"The QR needs {w}x{h + 1}; this terminal is {self.size.width}x"
                    f"{self.size.height}. Enlarge it, or send the text (w on the offer).",
                    style="bold red",
                )
            )
        else:
            note.update(Text("Escape returns to the offer.", style="dim"))

    def action_close(self) -> None:
        self.app.pop_screen()

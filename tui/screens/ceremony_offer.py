"""The transport offer of the running ceremony: text, terminal QR and expiry countdown.

The coordinator sends this to a remote custodian, who seals their share to it with
``custody share send --offer OFFER SHARE --envelope ENV``. Everything on this screen is
public (the offer is signed by the coordinator; its private half stays sealed on the HSM).
The QR is rendered with half blocks (``custody.shares.card.qr_terminal``) and scrolls
when the terminal is smaller than the code.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from tui.services.ceremony import OfferView


def offer_header(o: OfferView, now: int) -> Text:
    left = o.seconds_left(now)
    when = datetime.fromtimestamp(o.expires, UTC).strftime("%H:%M:%S UTC")
    out = Text("Remote offer", style="bold")
    out.append(f" {o.session[:8]} epoch {o.epoch}, expires {when} ", style="dim")
    out.append(
        "expired" if left == 0 else f"({left // 60}:{left % 60:02d} left)",
        style="red" if left == 0 else ("yellow" if left < 120 else "green"),
    )
    return out


class OfferScreen(Screen[None]):
    """Shows one offer; Escape returns to the ceremony (paste the blob there)."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, offer: OfferView, now: Callable[[], int]) -> None:
        super().__init__()
        self.offer = offer
        self._now = now

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="offer-head")
        with VerticalScroll(id="offer-body"):
            yield Static(
                Text(
                    "Send this to the custodian; they run: custody share send --offer OFFER "
                    "SHARE --envelope ENV --trust COORDINATOR.pub.json. Then paste their "
                    "custody-blob:... in the remote field and compare the SAS words by voice.",
                    style="dim",
                ),
                id="offer-help",
            )
            yield Static(Text(self.offer.text), id="offer-text")
            yield Static(Text(self.offer.qr, style="black on white", no_wrap=True), id="offer-qr")
        yield Footer()

    def on_mount(self) -> None:
        self._tick()
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        self.query_one("#offer-head", Static).update(offer_header(self.offer, self._now()))

    def action_close(self) -> None:
        self.app.pop_screen()

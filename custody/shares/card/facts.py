"""What a share card says: its page sizes, public facts, words and envelope QR.

The data half of :mod:`custody.shares.card`: :class:`Card` (the words are secret),
:class:`CardFacts`, the page sizes, the fixed texts, and the QR of the signed envelope
bytes (error-correction level Q; :func:`qr_terminal` draws it with half blocks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import qrcode
from qrcode.constants import ERROR_CORRECT_H, ERROR_CORRECT_L, ERROR_CORRECT_Q

from custody.shares.envelope import SignedEnvelope
from custody.shares.slip39_parse import ParsedShare, parse_share
from custody.shares.transport import TransportError, parse_offer

if TYPE_CHECKING:
    from qrcode.image.pil import PilImage
    from qrcode.image.pure import PyPNGImage

MM = 72 / 25.4  # points per millimetre


@dataclass(frozen=True, slots=True)
class PageSize:
    """A page: its name, size in points and the unit the SVG states it in."""

    name: str
    width: float
    height: float
    unit: str  # "mm" or "in"

    def svg_length(self, points: float) -> str:
        v = points / MM if self.unit == "mm" else points / 72
        return f"{v:.4g}{self.unit}"


SIZES: dict[str, PageSize] = {
    "a6": PageSize("a6", 105 * MM, 148 * MM, "mm"),
    "a4": PageSize("a4", 210 * MM, 297 * MM, "mm"),
    "letter": PageSize("letter", 8.5 * 72, 11 * 72, "in"),
}
DEFAULT_SIZE = "a6"  # fits at 100 % on A4 and on Letter paper, and in an envelope
DEFAULT_DPI = 300
# The default PNG's pixel size (A6 at 300 dpi).
W, H = (round(getattr(SIZES[DEFAULT_SIZE], a) / 72 * DEFAULT_DPI) for a in ("width", "height"))
LARGE_WORDS = 3

WHAT_TO_DO = (
    "What to do: keep this card sealed, offline and apart from every other share. "
    "Bring it only to a ceremony of this deployment. Never photograph, type or send the "
    "words anywhere else. Lost, or seen by someone? Tell the coordinator at once: a "
    "reshare makes this card useless."
)
QR_CAPTION = "QR: the signed envelope (no words). 'custody share verify' checks it."


@dataclass(frozen=True, slots=True, kw_only=True)
class CardFacts:
    """Public facts a card prints beside what the share and its envelope already say.

    ``group_size`` is the number of shares in the card's group, from the scheme (a share
    states its group's threshold and the group count, but not how many shares its group
    has). Empty fields print as "not given"; ``printed`` defaults to today (UTC).
    """

    deployment: str = ""
    kind: str = ""  # the ceremony that issued the share: generate, reshare
    group_size: int = 0  # 0: not given
    printed: date | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Card:
    """What a card shows. ``words`` are secret."""

    name: str
    label: str = ""
    words: tuple[str, ...] = field(repr=False)
    envelope: SignedEnvelope
    facts: CardFacts = field(default_factory=CardFacts)

    def __post_init__(self) -> None:
        n = self.facts.group_size
        if n and not self._share().member_threshold <= n <= 16:
            raise ValueError("the group size must be at least the share's threshold, and <= 16")

    def _share(self) -> ParsedShare:
        return parse_share(" ".join(self.words), label="card")

    @property
    def envelope_bytes(self) -> bytes:
        return self.envelope.to_bytes()

    def lines(self) -> list[str]:
        """The public facts as text lines (the TUI's card screen)."""
        p, kind = self.envelope.payload, self.facts.kind
        ceremony = f"{kind} {p.ceremony_id}" if kind else p.ceremony_id
        return [
            f"Custodian: {self.name}",
            f"Ceremony: {self.label} ({p.ceremony_id})" if self.label else f"Ceremony: {ceremony}",
            f"Group {p.group_index + 1}, member {p.member_index + 1}, epoch {p.epoch}",
            f"Envelope fingerprint: {self.envelope.short_fingerprint()}",
        ]

    def quorum(self) -> tuple[str, str]:
        """The short "k of n" and the sentence that explains it."""
        s, p = self._share(), self.envelope.payload
        k, g = s.member_threshold, p.group_index
        n = str(self.facts.group_size or "?")
        short = f"{k} of {n} needed"
        who = f"Share {p.member_index + 1} of group {g + 1}"
        if s.group_count == 1:
            long = f"{who}: any {k} of its {n} shares rebuild the recovery key."
        else:
            gt, gc = s.group_threshold, s.group_count
            short = f"{k} of {n}, {gt} of {gc} groups"
            long = (
                f"{who} (of {gc} groups): any {k} of its {n} shares complete the group; "
                f"{gt} of the {gc} groups rebuild the recovery key."
            )
        if not self.facts.group_size:
            long += " (Group size not given.)"
        return short, long

    def fields(self) -> list[list[tuple[str, str]]]:
        """The labelled facts, in print order: rows of one or two (label, value) cells."""
        p, f = self.envelope.payload, self.facts
        printed = f.printed or datetime.now(UTC).date()
        ceremony = f"{f.kind} {p.ceremony_id}" if f.kind else p.ceremony_id
        rows = [
            [("Deployment", f.deployment or "not given")],
            [("Ceremony", ceremony)],
            [("Epoch", str(p.epoch)), ("Printed", printed.isoformat())],
            [("KCV", p.kcv), ("Fingerprint", self.envelope.short_fingerprint())],
        ]
        if self.label:
            rows.insert(2, [("Label", self.label)])
        return rows


def make_qr(data: bytes, *, level: str = "Q") -> qrcode.QRCode[PilImage | PyPNGImage]:
    """A QR code of *data* (byte mode) at error-correction level Q or H.

    Raises:
        ValueError: level not Q or H.
    """
    if level not in ("Q", "H"):
        raise ValueError("use level Q or H for printed cards")
    q = qrcode.QRCode(
        error_correction=ERROR_CORRECT_Q if level == "Q" else ERROR_CORRECT_H, box_size=1, border=4
    )
    q.add_data(data, optimize=0)
    q.make(fit=True)
    return q


def half_blocks(m: list[list[bool]], *, dark_foreground: bool) -> str:
    """A QR's modules (True: dark) as text, two modules a character row. With
    *dark_foreground* a half or full block is dark (for a screen that draws the QR dark on
    light, like the TUI); without, a block is light and a dark module a space (a plain
    terminal, light text on dark), so it scans either way."""
    if len(m) % 2:
        m = [*m, [False] * len(m[0])]
    up, low, full, blank = "\u2580", "\u2584", "\u2588", " "
    if dark_foreground:
        glyph = {(True, True): full, (True, False): up, (False, True): low, (False, False): blank}
    else:
        glyph = {(False, False): full, (True, False): low, (False, True): up, (True, True): blank}
    return "\n".join(
        "".join(glyph[(top, bot)] for top, bot in zip(m[r], m[r + 1], strict=True))
        for r in range(0, len(m), 2)
    )


def qr_terminal(data: bytes, *, level: str = "Q") -> str:
    """Render the QR as text with half-block characters (two modules per character row),
    dark modules as spaces on a light background so it scans on dark terminals too."""
    return half_blocks(
        [list(r) for r in make_qr(data, level=level).get_matrix()], dark_foreground=False
    )


def offer_qr_content(text: str) -> str:
    """What an offer's QR holds: its compact form (322 decimal digits for a hand-in offer,
    :meth:`custody.shares.transport.Offer.to_compact`), which ``custody share send
    --offer`` reads like the text; the text itself when the compact form cannot carry the
    offer (or the text is not an offer)."""
    try:
        return parse_offer(text).to_compact()
    except (TransportError, ValueError):
        return text


def screen_qr_matrix(content: str) -> list[list[bool]]:
    """The modules (True: dark) of a QR read off a lit screen, not printed: level L, the
    lowest (it is what lets a hand-in offer fit 80x24), and a 2-module quiet zone. Digits
    go in numeric mode (10 bits per 3 digits), anything else as bytes. A compact hand-in
    offer is version 6: 45x23 in half blocks, where its 606-character text is 85x43."""
    q = qrcode.QRCode(error_correction=ERROR_CORRECT_L, box_size=1, border=2)
    numeric = content.isascii() and content.isdigit()
    q.add_data(content if numeric else content.encode(), optimize=0)
    q.make(fit=True)
    return [list(row) for row in q.get_matrix()]

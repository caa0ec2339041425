"""Printable share cards (PDF, SVG, PNG) and a terminal rendering of the envelope QR.

A card carries, for the custodian who holds it: their name; "k of n" (the group's member
threshold out of its size, and for multi-group sets the group threshold out of the group
count); the deployment, the full ceremony id (wrapped, never cut), epoch, date, the key
check value (KCV) and the envelope fingerprint; the first three words (set identifier and
group, SLIP-0039 ``GROUP_PREFIX_LENGTH_WORDS``) large; every word numbered in columns; a
QR code of the signed envelope bytes at error-correction level Q (25 % of the code can be
damaged and still decode); and one "what to do with this card" paragraph.

One layout (:func:`layout`, in PostScript points on the chosen page: A6, A4 or US Letter)
is drawn by three back ends, so the formats agree: the PDF with reportlab (text in an
embedded, subset Bitstream Vera font, the QR as filled rectangles: vector, no raster image),
the SVG by hand (``width``/``height`` in mm or in, ``viewBox`` in points) and the PNG with
Pillow at 300 dpi from the same font file. The QR encodes the envelope bytes exactly, so any
decoder returns them. The words are secret: they appear only in the rendered bytes.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import qrcode
from qrcode.constants import ERROR_CORRECT_H, ERROR_CORRECT_Q

from custody.shares.envelope import SignedEnvelope
from custody.shares.slip39 import ParsedShare, parse_share

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


def qr_terminal(data: bytes, *, level: str = "Q") -> str:
    """Render the QR as text with half-block characters (two modules per character row),
    dark modules as spaces on a light background so it scans on dark terminals too."""
    m = make_qr(data, level=level).get_matrix()
    if len(m) % 2:
        m = [*m, [False] * len(m[0])]
    glyph = {
        (False, False): "\u2588",
        (True, False): "\u2584",
        (False, True): "\u2580",
        (True, True): " ",
    }
    return "\n".join(
        "".join(glyph[(top, bot)] for top, bot in zip(m[r], m[r + 1], strict=True))
        for r in range(0, len(m), 2)
    )


# --------------------------------------------------------------------------- layout
@dataclass(frozen=True, slots=True)
class Text:
    """One line of text; ``y`` is its baseline, from the top of the page, in points."""

    x: float
    y: float
    size: float
    s: str
    bold: bool = False
    end: bool = False  # right-aligned at x


@dataclass(frozen=True, slots=True)
class Box:
    """A stroked rectangle (the cut line) or a filled one."""

    x: float
    y: float
    w: float
    h: float
    stroke: float = 0.0  # line width; 0 means filled


@dataclass(frozen=True, slots=True)
class Qr:
    """The QR: ``runs`` are (row, first column, length) of dark modules."""

    x: float
    y: float
    module: float
    count: int
    runs: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class Layout:
    page: PageSize
    items: tuple[Text | Box | Qr, ...]


@cache
def _font_files() -> tuple[Path, Path]:
    import reportlab

    d = Path(reportlab.__file__).parent / "fonts"
    return d / "Vera.ttf", d / "VeraBd.ttf"


FONT, FONT_BOLD = "CustodyVera", "CustodyVeraBold"
SVG_FONTS = "Bitstream Vera Sans, DejaVu Sans, Verdana, sans-serif"


@cache
def _register_fonts() -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    regular, bold = _font_files()
    pdfmetrics.registerFont(TTFont(FONT, str(regular)))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, str(bold)))


def text_width(s: str, size: float, *, bold: bool = False) -> float:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    _register_fonts()
    return float(stringWidth(s, FONT_BOLD if bold else FONT, size))


def _wrap(s: str, size: float, width: float, *, bold: bool = False) -> list[str]:
    """Break *s* at spaces (and after hyphens) to fit *width*; a piece longer than the line
    (an id) is broken between characters, so nothing is ever cut."""
    lines: list[str] = []
    cur = ""
    for word in s.split(" "):
        for i, piece in enumerate(re.findall(r"[^-]*-|[^-]+", word) or [""]):
            joint = " " if cur and i == 0 else ""
            if text_width(cur + joint + piece, size, bold=bold) <= width:
                cur += joint + piece
                continue
            if cur:
                lines.append(cur)
            cur = ""
            for ch in piece:
                if text_width(cur + ch, size, bold=bold) > width and cur:
                    lines.append(cur)
                    cur = ""
                cur += ch
    lines.append(cur)
    return lines


def _fit(s: str, size: float, width: float, *, bold: bool = False) -> float:
    """The largest size up to *size* at which *s* fits on one line of *width*."""
    w = text_width(s, size, bold=bold)
    return size if w <= width else size * width / w


def _runs(matrix: list[list[bool]]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for r, row in enumerate(matrix):
        c = 0
        while c < len(row):
            if row[c]:
                start = c
                while c < len(row) and row[c]:
                    c += 1
                out.append((r, start, c - start))
            else:
                c += 1
    return tuple(out)


def layout(card: Card, size: str = DEFAULT_SIZE) -> Layout:
    """Place everything on the page. Drawn at A6 proportions and scaled to the page.

    Raises:
        ValueError: unknown size.
    """
    if size not in SIZES:
        raise ValueError(f"unknown card size {size!r}")
    page = SIZES[size]
    a6 = SIZES["a6"]
    k = min(page.width / a6.width, page.height / a6.height)
    ox = (page.width - a6.width * k) / 2
    oy = (page.height - a6.height * k) / 2

    def u(v: float) -> float:
        return v * k

    items: list[Text | Box | Qr] = []
    items.append(Box(ox + u(8), oy + u(8), u(a6.width - 16), u(a6.height - 16), u(0.5)))
    m = 20.0
    left, right = ox + u(m), ox + u(a6.width - m)
    width = right - left
    y = oy + u(m)

    def line(s: str, sz: float, *, bold: bool = False, lead: float = 1.25) -> None:
        nonlocal y
        y += u(sz)
        items.append(Text(left, y, u(sz), s, bold))
        y += u(sz * (lead - 1))

    # Header: what this is, and for whom.
    y += u(8)
    items.append(Text(left, y, u(8), "RECOVERY SHARE \u2014 SECRET", True))
    items.append(Text(right, y, u(7), "custody", False, True))
    y += u(5)
    short, long = card.quorum()
    qsize = _fit(short, 13, width / 2.5, bold=True)
    name_w = width - text_width(short, u(qsize), bold=True) - u(8)
    name = card.name or "(no name given)"
    nsize = 13.0
    while len(_wrap(name, u(nsize), name_w, bold=True)) > 2 and nsize > 7:
        nsize -= 0.5
    y += u(13)
    items.append(Text(right, y, u(qsize), short, True, True))
    for i, nl in enumerate(_wrap(name, u(nsize), name_w, bold=True)):
        if i:
            y += u(nsize * 1.15)
        items.append(Text(left, y, u(nsize), nl, True))
    y += u(4)
    for ql in _wrap(long, u(7.5), width):
        line(ql, 7.5)

    # Facts: label column and wrapped values; short facts two to a row.
    y += u(4)
    lab_w, half = u(52), width / 2
    for row in card.fields():
        if len(row) == 2:
            y += u(7)
            for j, (lab, val) in enumerate(row):
                x = left + j * half
                items.append(Text(x, y, u(6.5), lab, True))
                items.append(Text(x + (lab_w if j == 0 else u(46)), y, u(7), val))
            y += u(2)
            continue
        ((lab, val),) = row
        for i, vl in enumerate(_wrap(val, u(7), width - lab_w)):
            y += u(7)
            if i == 0:
                items.append(Text(left, y, u(6.5), lab, True))
            items.append(Text(left + lab_w, y, u(7), vl))
            y += u(2)
    y += u(3)
    items.append(Box(left, y, width, u(0.4)))
    y += u(4)

    # The identifying words large, then every word numbered in columns, as tall as the
    # room above the QR allows (up to 9 pt on 11.2 pt lines).
    g = card.envelope.payload.group_index + 1
    line(f"Words 1\u2013{LARGE_WORDS}, the same on every share of group {g}:", 6.5, lead=1.1)
    big = "  ".join(card.words[:LARGE_WORDS]).upper()
    line(big, _fit(big, 13, width / k, bold=True), bold=True, lead=1.35)
    q = make_qr(card.envelope_bytes)
    mx = q.get_matrix()
    qside = u(124)
    qx, qy = right - qside, oy + u(a6.height - m) - qside
    cols = 3  # 4 columns leave too little room between the longest words
    per = -(-len(card.words) // cols)
    col_w = width / cols
    room = (qy - u(4) - y) / k  # in A6 points
    lead = min(11.2, (room - 9.0) / max(per - 1, 1))
    wsize = min(9.0, lead / 1.12)
    if wsize < 6.5:
        raise ValueError("the card's text does not fit above the QR (name or label too long)")
    for i, w in enumerate(card.words):
        c, r = divmod(i, per)
        yy = y + u(wsize + r * lead)
        # Two spaces are one digit wide in Vera (and DejaVu), so the numbers line up.
        pad = "  " if i < 9 else ""
        items.append(Text(left + c * col_w, yy, u(wsize), f"{pad}{i + 1}. {w}"))

    # Bottom: the QR on the right, the caption and what to do on its left.
    items.append(Qr(qx, qy, qside / len(mx), len(mx), _runs(mx)))
    ty = qy + u(6)
    tw = qx - left - u(6)
    for para, sz in ((QR_CAPTION, 6.2), (WHAT_TO_DO, 6.6)):
        for pl in _wrap(para, u(sz), tw, bold=para is WHAT_TO_DO):
            ty += u(sz * 1.22)
            items.append(Text(left, ty, u(sz), pl, para is WHAT_TO_DO))
        ty += u(5)
    return Layout(page, tuple(items))


# --------------------------------------------------------------------------- back ends
def render_pdf(card: Card, *, size: str = DEFAULT_SIZE) -> bytes:
    """The card as a one-page vector PDF: embedded subset TrueType text and the QR as
    filled rectangles. It has no image XObject."""
    from reportlab.pdfgen.canvas import Canvas

    _register_fonts()
    lay = layout(card, size)
    ph = lay.page.height
    buf = io.BytesIO()
    # initialFontName: else the page names an unused, unembedded Helvetica. (types-reportlab
    # types it as a float; reportlab takes a font name.)
    c = Canvas(buf, pagesize=(lay.page.width, ph), pageCompression=1, initialFontName=FONT)  # type: ignore[arg-type]
    c.setTitle("custody share card")
    c.setCreator("custody")
    c.setFillGray(0)
    c.setStrokeGray(0)
    for it in lay.items:
        if isinstance(it, Text):
            c.setFont(FONT_BOLD if it.bold else FONT, it.size)
            draw = c.drawRightString if it.end else c.drawString
            draw(it.x, ph - it.y, it.s)
        elif isinstance(it, Box):
            if it.stroke:
                c.setLineWidth(it.stroke)
                c.setStrokeGray(0.6)
                c.rect(it.x, ph - it.y - it.h, it.w, it.h, stroke=1, fill=0)
                c.setStrokeGray(0)
            else:
                c.rect(it.x, ph - it.y - it.h, it.w, it.h, stroke=0, fill=1)
        else:
            p = c.beginPath()
            for r, col, n in it.runs:
                p.rect(
                    it.x + col * it.module,
                    ph - it.y - (r + 1) * it.module,
                    n * it.module,
                    it.module,
                )
            c.drawPath(p, stroke=0, fill=1)
    c.showPage()
    c.save()
    return buf.getvalue()


def render_svg(card: Card, *, size: str = DEFAULT_SIZE) -> bytes:
    """The card as SVG: width and height in mm (or in for Letter), viewBox in points."""
    lay = layout(card, size)
    pg = lay.page
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{pg.svg_length(pg.width)}" '
            f'height="{pg.svg_length(pg.height)}" viewBox="0 0 {pg.width:.3f} {pg.height:.3f}" '
            f'font-family="{SVG_FONTS}">'
        ),
        f'<rect width="{pg.width:.3f}" height="{pg.height:.3f}" fill="white"/>',
    ]
    for it in lay.items:
        if isinstance(it, Text):
            attrs = ' font-weight="bold"' if it.bold else ""
            attrs += ' text-anchor="end"' if it.end else ""
            out.append(
                f'<text x="{it.x:.2f}" y="{it.y:.2f}" font-size="{it.size:.2f}"{attrs} '
                f'xml:space="preserve">{escape(it.s)}</text>'
            )
        elif isinstance(it, Box):
            if it.stroke:
                out.append(
                    f'<rect x="{it.x:.2f}" y="{it.y:.2f}" width="{it.w:.2f}" '
                    f'height="{it.h:.2f}" fill="none" stroke="#999" '
                    f'stroke-width="{it.stroke:.2f}"/>'
                )
            else:
                out.append(
                    f'<rect x="{it.x:.2f}" y="{it.y:.2f}" width="{it.w:.2f}" '
                    f'height="{it.h:.2f}" fill="black"/>'
                )
        else:
            d = "".join(f"M{col} {r}h{n}v1h-{n}z" for r, col, n in it.runs)
            out.append(
                f'<path transform="translate({it.x:.3f} {it.y:.3f}) scale({it.module:.5f})" '
                f'd="{d}" fill="black"/>'
            )
    out.append("</svg>")
    return "\n".join(out).encode()


def render_png(card: Card, *, size: str = DEFAULT_SIZE, dpi: int = DEFAULT_DPI) -> bytes:
    """The card as a grey-scale PNG at *dpi* (300 by default)."""
    from PIL import Image, ImageDraw, ImageFont

    lay = layout(card, size)
    s = dpi / 72
    img = Image.new("L", (round(lay.page.width * s), round(lay.page.height * s)), 255)
    d = ImageDraw.Draw(img)
    regular, bold = _font_files()
    fonts: dict[tuple[bool, int], ImageFont.FreeTypeFont] = {}
    for it in lay.items:
        if isinstance(it, Text):
            key = (it.bold, max(1, round(it.size * s)))
            if key not in fonts:
                fonts[key] = ImageFont.truetype(str(bold if it.bold else regular), key[1])
            d.text(
                (it.x * s, it.y * s), it.s, font=fonts[key], fill=0, anchor="rs" if it.end else "ls"
            )
        elif isinstance(it, Box):
            box = (it.x * s, it.y * s, (it.x + it.w) * s, (it.y + it.h) * s)
            if it.stroke:
                d.rectangle(box, outline=150, width=max(1, round(it.stroke * s)))
            else:
                d.rectangle(box, fill=0)
        else:
            # Whole pixels per module, so every module prints the same size.
            mod = max(1, int(it.module * s))
            x0 = round(it.x * s + (it.module * s - mod) * it.count / 2)
            y0 = round(it.y * s + (it.module * s - mod) * it.count / 2)
            for r, col, n in it.runs:
                d.rectangle(
                    (
                        x0 + col * mod,
                        y0 + r * mod,
                        x0 + (col + n) * mod - 1,
                        y0 + (r + 1) * mod - 1,
                    ),
                    fill=0,
                )
    buf = io.BytesIO()
    img.save(buf, format="PNG", dpi=(dpi, dpi), optimize=True)
    return buf.getvalue()


FORMATS = ("png", "svg", "pdf")


def render(card: Card, fmt: str, *, size: str = DEFAULT_SIZE) -> bytes:
    """Render in ``png``, ``svg`` or ``pdf`` on page *size* (``a6``, ``a4``, ``letter``).

    Raises:
        ValueError: unknown format or size.
    """
    renderers = {"png": render_png, "svg": render_svg, "pdf": render_pdf}
    if fmt not in renderers:
        raise ValueError(f"unknown card format {fmt!r}")
    if size not in SIZES:
        raise ValueError(f"unknown card size {size!r}")
    return renderers[fmt](card, size=size)

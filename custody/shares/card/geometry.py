"""The one layout of a share card, in PostScript points on its page (A6, A4, Letter).

Everything every back end draws (:mod:`custody.shares.card.backends`) is placed here, so
the formats agree: text lines measured in the embedded Bitstream Vera font, the cut line,
and the QR as runs of dark modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from custody.shares.card.facts import (
    DEFAULT_SIZE,
    LARGE_WORDS,
    QR_CAPTION,
    SIZES,
    WHAT_TO_DO,
    Card,
    PageSize,
    make_qr,
)


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

    # The identifying words large, then every word numbered in columns (9 pt on 11.2 pt
    # lines), then the QR as large as the room left allows, with the caption and what to do
    # beside it; on a short share the words grow a little (to 10.5 pt) instead of leaving
    # a blank band. Sizes are chosen in A6 points, so every page size wraps alike.
    g = card.envelope.payload.group_index + 1
    line(f"Words 1\u2013{LARGE_WORDS}, the same on every share of group {g}:", 6.5, lead=1.1)
    big = "  ".join(card.words[:LARGE_WORDS]).upper()
    line(big, _fit(big, 13, width / k, bold=True), bold=True, lead=1.35)
    q = make_qr(card.envelope_bytes)
    mx = q.get_matrix()
    cols = 3  # 4 columns leave too little room between the longest words
    per = -(-len(card.words) // cols)
    top, bottom, span = (y - oy) / k, a6.height - QR_BOTTOM, width / k  # A6 points
    qs = _qr_side(span, bottom - top - WORDS_GAP - (WORD_SIZE + (per - 1) * WORD_LEAD))
    # The code's quiet zone (4 modules, part of the matrix) may reach into the right margin,
    # so its dark modules line up with the text's right edge.
    quiet = qs * 4 / len(mx)
    qx, qy = right - u(qs - quiet), oy + u(bottom - qs)
    room = bottom - qs - WORDS_GAP - top
    lead = min(WORD_LEAD_MAX, (room - WORD_SIZE) / max(per - 1, 1))
    wsize = min(WORD_SIZE_MAX, lead / 1.12)
    if wsize < 6.5:
        raise ValueError("the card's text does not fit above the QR (name or label too long)")
    col_w = width / cols
    for i, w in enumerate(card.words):
        c, r = divmod(i, per)
        yy = y + u(wsize + r * lead)
        # Two spaces are one digit wide in Vera (and DejaVu), so the numbers line up.
        pad = "  " if i < 9 else ""
        items.append(Text(left + c * col_w, yy, u(wsize), f"{pad}{i + 1}. {w}"))

    # Bottom: the QR on the right, the caption and what to do on its left.
    items.append(Qr(qx, qy, u(qs) / len(mx), len(mx), _runs(mx)))
    ty = qy + u(SIDE_TOP)
    for text, sz, bold in _side_paragraphs(span - qs + quiet - SIDE_GAP):
        for pl in text:
            ty += u(sz * SIDE_LEAD)
            items.append(Text(left, ty, u(sz), pl, bold))
        ty += u(SIDE_PARA)
    return Layout(page, tuple(items))


# The lower half of the card, in A6 points.
WORD_SIZE, WORD_LEAD = 9.0, 11.2  # the words' preferred size and line spacing
WORD_SIZE_MAX, WORD_LEAD_MAX = 10.5, 13.0  # a short (20-word) share grows to this
WORDS_GAP = 4.0  # between the last word row and the QR
QR_MIN, QR_MAX = 124.0, 0.64  # the QR's side: at least 124 pt, at most 64 % of the text width
QR_BOTTOM = 14.0  # the QR's lower edge (with its quiet zone) above the page's bottom edge
SIDE_TOP, SIDE_LEAD, SIDE_PARA, SIDE_GAP = 6.0, 1.22, 5.0, 6.0
SIDE_TEXT = ((QR_CAPTION, 6.2, False), (WHAT_TO_DO, 6.6, True))


def _side_paragraphs(width: float) -> list[tuple[list[str], float, bool]]:
    """The caption and what to do, wrapped to *width* (A6 points)."""
    return [(_wrap(t, sz, width, bold=b), sz, b) for t, sz, b in SIDE_TEXT]


def _side_height(width: float) -> float:
    return SIDE_TOP + sum(
        len(ls) * sz * SIDE_LEAD + SIDE_PARA for ls, sz, _ in _side_paragraphs(width)
    )


def _qr_side(span: float, free: float) -> float:
    """The QR's side in A6 points: what *free* leaves below the words at their preferred
    size, between QR_MIN and QR_MAX of the text width *span*, and no larger than the
    caption and what-to-do text beside it need to fit in its height."""
    qs = max(QR_MIN, min(QR_MAX * span, free))
    while qs > QR_MIN and _side_height(span - qs - SIDE_GAP) > qs:
        qs -= 1.0
    return qs

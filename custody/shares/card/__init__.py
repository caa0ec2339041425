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

The package: :mod:`.facts` (the card, its facts, page sizes and QR), :mod:`.geometry`
(the layout) and :mod:`.backends` (the PDF, SVG and PNG drawing). Import from here.
"""

from __future__ import annotations

from custody.shares.card.backends import FORMATS, render, render_pdf, render_png, render_svg
from custody.shares.card.facts import (
    DEFAULT_DPI,
    DEFAULT_SIZE,
    LARGE_WORDS,
    MM,
    QR_CAPTION,
    SIZES,
    WHAT_TO_DO,
    Card,
    CardFacts,
    H,
    PageSize,
    W,
    half_blocks,
    make_qr,
    offer_qr_content,
    qr_terminal,
    screen_qr_matrix,
)
from custody.shares.card.geometry import Box, Layout, Qr, Text, layout, text_width

__all__ = [
    "DEFAULT_DPI",
    "DEFAULT_SIZE",
    "FORMATS",
    "LARGE_WORDS",
    "MM",
    "QR_CAPTION",
    "SIZES",
    "WHAT_TO_DO",
    "Box",
    "Card",
    "CardFacts",
    "H",
    "Layout",
    "PageSize",
    "Qr",
    "Text",
    "W",
    "half_blocks",
    "layout",
    "make_qr",
    "offer_qr_content",
    "qr_terminal",
    "render",
    "render_pdf",
    "render_png",
    "render_svg",
    "screen_qr_matrix",
    "text_width",
]

"""The back ends that draw a card's layout: PDF (reportlab), SVG (by hand), PNG (Pillow).

See :mod:`custody.shares.card` for what each format guarantees.
"""

from __future__ import annotations

import io
from xml.sax.saxutils import escape

from custody.shares.card.facts import DEFAULT_DPI, DEFAULT_SIZE, SIZES, Card
from custody.shares.card.geometry import (
    FONT,
    FONT_BOLD,
    SVG_FONTS,
    Box,
    Text,
    _font_files,
    _register_fonts,
    layout,
    text_width,
)


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
    """The card as SVG: width and height in mm (or in for Letter), viewBox in points; each
    line of text states its measured length (``textLength``), so the layout holds in
    whatever font the viewer has."""
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
            # The width the layout measured in Vera: a viewer that falls back to another
            # font stretches or squeezes the line to it, so no line runs into the next.
            if w := text_width(it.s, it.size, bold=it.bold):
                attrs += f' textLength="{w:.2f}" lengthAdjust="spacingAndGlyphs"'
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
            # Module edges on the nearest pixel, as a printer rasterises the PDF: the code
            # keeps the layout's size (whole pixels per module shrank it by up to a fifth),
            # and modules differ by at most one pixel.
            def edge(origin: float, n: int, m: float = it.module) -> int:
                return round((origin + n * m) * s)

            for r, col, n in it.runs:
                d.rectangle(
                    (
                        edge(it.x, col),
                        edge(it.y, r),
                        edge(it.x, col + n) - 1,
                        edge(it.y, r + 1) - 1,
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

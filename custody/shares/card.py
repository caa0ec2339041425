"""Printable share cards (PNG, PDF, SVG) and a terminal rendering of the envelope QR.

A card carries the custodian's name, the ceremony label, the share words in numbered
columns with the first three words (set identifier and group, SLIP-0039
``GROUP_PREFIX_LENGTH_WORDS``) printed large, a QR code of the signed envelope bytes at
error-correction level Q (25 % of the code can be damaged or dirty and still decode), and a
short fingerprint of the envelope for a person to compare with the coordinator's record.

PNG and PDF are drawn with Pillow; SVG is written by hand with the QR from ``qrcode``'s
SVG path factory. The QR encodes the envelope bytes exactly, so any decoder returns them.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import qrcode
import qrcode.image.svg
from qrcode.constants import ERROR_CORRECT_H, ERROR_CORRECT_Q

from custody.shares.envelope import SignedEnvelope

if TYPE_CHECKING:
    from PIL import Image as PILImage
    from qrcode.image.pil import PilImage
    from qrcode.image.pure import PyPNGImage

W, H = 2100, 1275  # 7 x 4.25 in at 300 dpi
LARGE_WORDS = 3
COLUMNS = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class Card:
    """What a card shows. ``words`` are secret."""

    name: str
    label: str
    words: tuple[str, ...] = field(repr=False)
    envelope: SignedEnvelope

    @property
    def envelope_bytes(self) -> bytes:
        return self.envelope.to_bytes()

    def lines(self) -> list[str]:
        p = self.envelope.payload
        return [
            f"Custodian: {self.name}",
            f"Ceremony: {self.label} ({p.ceremony_id})",
            f"Group {p.group_index + 1}, member {p.member_index + 1}, epoch {p.epoch}",
            f"Envelope fingerprint: {self.envelope.short_fingerprint()}",
        ]


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


def _columns(words: tuple[str, ...]) -> list[list[tuple[int, str]]]:
    per = -(-len(words) // COLUMNS)
    numbered = list(enumerate(words, start=1))
    return [numbered[i : i + per] for i in range(0, len(numbered), per)]


def render_png(card: Card, *, dpi: int = 300) -> bytes:
    """The card as PNG bytes."""
    buf = io.BytesIO()
    _image(card).save(buf, format="PNG", dpi=(dpi, dpi))
    return buf.getvalue()


def render_pdf(card: Card) -> bytes:
    """The card as a one-page PDF (300 dpi raster)."""
    buf = io.BytesIO()
    _image(card).convert("RGB").save(buf, format="PDF", resolution=300.0)
    return buf.getvalue()


def _image(card: Card) -> PILImage.Image:
    from PIL import Image, ImageDraw, ImageFont
    from qrcode.image.pil import PilImage

    img = Image.new("L", (W, H), 255)
    d = ImageDraw.Draw(img)
    f = {s: ImageFont.load_default(size=s) for s in (34, 40, 64)}
    q = make_qr(card.envelope_bytes)
    n = len(q.get_matrix())
    side = 700 // n * n  # whole pixels per module, so every module prints the same size
    # PilImage is what qrcode picks by default when Pillow is installed (a dependency).
    qr = q.make_image(PilImage, fill_color="black", back_color="white").get_image().convert("L")
    img.paste(qr.resize((side, side), Image.Resampling.NEAREST), (W - 760, 60))
    y = 60
    for line in card.lines():
        d.text((60, y), line[:56], font=f[40], fill=0)
        y += 56
    y += 20
    d.text((60, y), "  ".join(card.words[:LARGE_WORDS]).upper(), font=f[64], fill=0)
    y += 110
    for c, col in enumerate(_columns(card.words)):
        for r, (n, w) in enumerate(col):
            d.text((60 + c * 340, y + r * 48), f"{n:2d}. {w}", font=f[34], fill=0)
    d.text((W - 760, 60 + side + 10), "QR: signed share envelope (no words)", font=f[34], fill=0)
    return img


def render_svg(card: Card) -> bytes:
    """The card as SVG (text by hand, QR from qrcode's SVG path factory)."""
    qr = (
        make_qr(card.envelope_bytes)
        .make_image(image_factory=qrcode.image.svg.SvgPathImage)
        .to_string()
        .decode()
    )
    qr = re.sub(r"^<\?xml[^>]*>", "", qr)
    side = 700
    qr = re.sub(
        r'<svg width="[^"]*" height="[^"]*"',
        f'<svg x="{W - side - 60}" y="60" width="{side}" height="{side}"',
        qr,
        count=1,
    )
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" font-family="DejaVu Sans, sans-serif">'
        ),
        f'<rect width="{W}" height="{H}" fill="white"/>',
        qr,
    ]
    y = 100
    for line in card.lines():
        out.append(f'<text x="60" y="{y}" font-size="40">{escape(line)}</text>')
        y += 56
    y += 80
    big = escape("  ".join(card.words[:LARGE_WORDS]).upper())
    out.append(f'<text x="60" y="{y}" font-size="64" font-weight="bold">{big}</text>')
    y += 90
    for c, col in enumerate(_columns(card.words)):
        for r, (n, w) in enumerate(col):
            out.append(
                f'<text x="{60 + c * 340}" y="{y + r * 48}" font-size="34" '
                f'xml:space="preserve">{n:2d}. {escape(w)}</text>'
            )
    out.append("</svg>")
    return "\n".join(out).encode()


def render(card: Card, fmt: str) -> bytes:
    """Render in ``png``, ``svg`` or ``pdf``.

    Raises:
        ValueError: unknown format.
    """
    renderers = {"png": render_png, "svg": render_svg, "pdf": render_pdf}
    if fmt not in renderers:
        raise ValueError(f"unknown card format {fmt!r}")
    return renderers[fmt](card)

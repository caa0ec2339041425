"""Remote sealed hand-in for the ceremony screen: the offer, the pasted blob, the result.

A custodian far away seals their share to a transport offer of the running ceremony
(``custody share send --offer OFFER SHARE --envelope ENV``; see
:mod:`custody.shares.transport`). The coordinator's screen shows the offer as text and a
terminal QR with its expiry (:class:`OfferView`), takes the pasted ``custody-blob:...``
text, and hands it to the runner as ``Inputs.sealed``: the runner opens it with the
offer's private half (sealed on the HSM, never here), checks the share like any other,
records it, and reports the short authentication string (SAS) that both sides read aloud.
The session (:meth:`ceremonies.session.CeremonySession.hand_in_sealed`) turns the runner's
structured record of it (:class:`ceremonies.runner.HandIn`) into the share row; nothing
reads the runner's message lines.

Secrets: the blob is ciphertext; the share inside is opened only by the runner. The offer,
the SAS and the result are public.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custody.errors import ConfigError, UsageError

BLOB_PREFIX = "custody-blob:"


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferView:
    """A transport offer of the running ceremony (all public)."""

    text: str  # custody-offer:...
    qr: str  # qr_terminal(text)
    expires: int  # Unix seconds
    epoch: int
    step: str
    session: str  # the running ceremony's id
    digest: str = ""

    def seconds_left(self, now: int) -> int:
        return max(0, self.expires - now)


def offer_view(doc: dict[str, Any]) -> OfferView:
    """The screen's view of :meth:`ceremonies.runner.CeremonyRunner.offer`'s result."""
    text = str(doc["offer"])
    return OfferView(
        text=text,
        qr=screen_qr(text),
        expires=int(doc["expires"]),
        epoch=int(doc["epoch"]),
        step=str(doc["step"]),
        session=str(doc.get("session", "")),
        digest=str(doc.get("offer_sha256", "")),
    )


def screen_qr(text: str) -> str:
    """The offer as a terminal QR: level L and a 2-module quiet zone (it is read off a
    lit screen, not printed), in half blocks, so it is as small as the offer allows (a
    570-character offer: 85 columns by 43 rows, against 117 by 57 at the cards' level Q)."""
    import qrcode
    from qrcode.constants import ERROR_CORRECT_L

    q = qrcode.QRCode(error_correction=ERROR_CORRECT_L, box_size=1, border=2)
    q.add_data(text.encode(), optimize=0)
    q.make(fit=True)
    m = q.get_matrix()
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


def read_sealed(text: str) -> str:
    """The blob as pasted (``custody-blob:...``) or the path of a file holding it.

    Raises:
        UsageError: nothing pasted, or not a sealed hand-in. ConfigError: unreadable file.
    """
    t = text.strip()
    if not t:
        raise UsageError("Nothing pasted", "Paste the custody-blob:... text the custodian sent.")
    if not t.startswith(BLOB_PREFIX):
        p = Path(t).expanduser()
        try:
            t = p.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                "That is not a sealed hand-in",
                "Paste the custody-blob:... text from 'custody share send', or "
                "the path of the file it wrote.",
            ) from exc
        if not t.startswith(BLOB_PREFIX):
            raise ConfigError(
                f"{p.name} holds no sealed hand-in",
                "It must start with custody-blob: (from 'custody share send').",
            )
    return t


def offer_lines(text: str, width: int = 64) -> list[str]:
    """The offer text in lines of *width* characters, to copy from the screen: the reader
    (``custody share send --offer``) ignores the line breaks, and the lines are drawn
    without any wrapping or scrollbar glyph beside them."""
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]


def write_offer(text: str, path: str) -> Path:
    """Write the (public) offer text to *path*, for ``custody share send --offer PATH``.

    Raises:
        ConfigError: the file cannot be written.
    """
    p = Path(path).expanduser()
    try:
        p.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Cannot write the offer to {p.name}",
            "Give a path in a directory you can write to.",
        ) from exc
    return p

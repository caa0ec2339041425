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
    qr: str  # the QR of qr_text, in half blocks (screen_qr)
    expires: int  # Unix seconds
    epoch: int
    step: str
    session: str  # the running ceremony's id
    digest: str = ""
    qr_text: str = ""  # what the QR holds: the compact digits (or the text, if it cannot)

    def seconds_left(self, now: int) -> int:
        return max(0, self.expires - now)


def offer_view(doc: dict[str, Any]) -> OfferView:
    """The screen's view of :meth:`ceremonies.runner.CeremonyRunner.offer`'s result."""
    text = str(doc["offer"])
    content = qr_content(text)
    return OfferView(
        text=text,
        qr=screen_qr(content),
        qr_text=content,
        expires=int(doc["expires"]),
        epoch=int(doc["epoch"]),
        step=str(doc["step"]),
        session=str(doc.get("session", "")),
        digest=str(doc.get("offer_sha256", "")),
    )


def qr_content(text: str) -> str:
    """What the offer's QR holds: its compact form, or the text when the compact form
    cannot carry it (:func:`custody.shares.card.offer_qr_content`)."""
    from custody.shares.card import offer_qr_content

    return offer_qr_content(text)


def qr_matrix(content: str) -> list[list[bool]]:
    """The QR's modules at level L, numeric mode for digits, a 2-module quiet zone
    (:func:`custody.shares.card.screen_qr_matrix`)."""
    from custody.shares.card import screen_qr_matrix

    return screen_qr_matrix(content)


# The screens draw a QR "black on white" (tui.screens.ceremony_offer): a half or full
# block is a dark module, a space a light one, so the light quiet zone is the screen's
# own white, on a dark terminal theme too.
QR_STYLE = "black on white"


def half_blocks(m: list[list[bool]]) -> str:
    """A QR's modules (True: dark) as text, two modules a row, for :data:`QR_STYLE`."""
    from custody.shares.card import half_blocks as blocks

    return blocks(m, dark_foreground=True)


def screen_qr(content: str) -> str:
    """The QR of *content* (see :func:`qr_content`) in half blocks for :data:`QR_STYLE`:
    a hand-in offer's 322 digits are a version 6 QR, 45 columns by 23 rows with its quiet
    zone, where its 606-character text was 85 by 43 (and 117 by 57 at the cards' level Q)."""
    return half_blocks(qr_matrix(content))


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

"""Remote sealed hand-in for the ceremony screen: the offer, the pasted blob, the result.

A custodian far away seals their share to a transport offer of the running ceremony
(``custody share send --offer OFFER SHARE --envelope ENV``; see
:mod:`custody.shares.transport`). The coordinator's screen shows the offer as text and a
terminal QR with its expiry (:class:`OfferView`), takes the pasted ``custody-blob:...``
text, and hands it to the runner as ``Inputs.sealed``: the runner opens it with the
offer's private half (sealed on the HSM, never here), checks the share like any other,
records it, and reports the short authentication string (SAS) that both sides read aloud.
:func:`sealed_result` turns what the runner reported into the screen's share row.

Secrets: the blob is ciphertext; the share inside is opened only by the runner. The offer,
the SAS and the result are public.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custody.errors import ConfigError, UsageError
from tui.services_ceremony_checks import ShareCheck, ShareSet

BLOB_PREFIX = "custody-blob:"
_SAS = re.compile(
    r"remote hand-in (?P<src>.+?) opened; short authentication string: (?P<sas>.+?)"
    r" \(compare"
)
_SO_FAR = re.compile(r"share\(s\) accepted so far \((?P<names>[^)]*)\)")


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
    from custody.shares.card import qr_terminal

    text = str(doc["offer"])
    return OfferView(
        text=text,
        qr=qr_terminal(text.encode()),
        expires=int(doc["expires"]),
        epoch=int(doc["epoch"]),
        step=str(doc["step"]),
        session=str(doc.get("session", "")),
        digest=str(doc.get("offer_sha256", "")),
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


def sealed_result(
    source: str,
    messages: Sequence[str],
    sset: ShareSet | None,
    facts: dict[str, Any],
    counted: set[str],
) -> tuple[ShareCheck, str]:
    """The share row and the SAS of one remote hand-in, from what the runner reported in
    the run that opened it (*messages*: that run's new messages only).

    *counted*: custodians already counted on screen (the new one is the one that is not).
    """
    sas = next(
        (m.group("sas") for m in map(_SAS.search, messages) if m and m.group("src") == source), ""
    )
    tag = f"remote:{source}"
    for msg in messages:
        head, sep, why = msg.partition(" rejected: ")
        if not sep:
            continue
        if head == f"remote hand-in {source}":
            return ShareCheck(source=tag, status="rejected", reason=why), sas
        if sas and head.startswith("share of "):
            who = head.removeprefix("share of ")
            name = "" if who == tag else who
            return ShareCheck(source=tag, status="rejected", custodian=name, reason=why), sas
    names: set[str] = set()
    for msg in messages:
        m = _SO_FAR.search(msg)
        if m:
            names = {n.strip() for n in m.group("names").split(",") if n.strip()}
    for k, v in facts.items():
        if k.endswith("shares.accepted") and isinstance(v, list):
            names |= {str(n) for n in v}
    new = sorted(names - counted - {"none"})
    if not sas or not new:
        return ShareCheck(
            source=tag, status="rejected", reason="the runner did not count it (see the messages)"
        ), sas
    name = new[0]
    where = next(
        ((g, m) for (g, m), h in (sset.holders.items() if sset else ()) if h["name"] == name), None
    )
    return ShareCheck(
        source=tag,
        status="ok",
        custodian=name,
        group=where[0] + 1 if where else None,
        member=where[1] + 1 if where else None,
    ), sas

"""The compact offer (issue 12: the offer QR fits 80x24): the same signed offer as decimal
digits for a numeric-mode QR. It round-trips to the very offer the coordinator signed
(the fingerprint restored from the pinned key), seals a blob the coordinator opens, stays
backward compatible with the ``custody-offer:`` text, and refuses what an attacker
changes. The QR itself is tested with the screen that shows it (tests/tui/test_tui_offer_qr.py)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from custody.canonical import canonical_bytes
from custody.shares import transport as t
from custody.signing import fingerprint, public_raw

COORD = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
MALLORY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
NOW = 1_800_000_000
GEN, RUN = "9e0d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", "5e551017c3a1f09e5b7d4e21a0b1c2d3"
SHARE = " ".join(["academic"] * 20)  # a stand-in mnemonic: the transport does not parse it


def offer(session: str = RUN, *, key: Ed25519PrivateKey = COORD, epoch: int = 1) -> t.OfferKey:
    return t.make_offer(ceremony_id=GEN, epoch=epoch, session=session, coordinator=key, now=NOW)


@pytest.mark.parametrize("session", [RUN, GEN], ids=["hand-in", "verification-round"])
def test_round_trip_to_the_signed_offer(session):
    ok = offer(session)
    c = ok.offer.to_compact()
    assert c.isdigit() and c[0] == t.COMPACT_MARK
    assert len(c) == (322 if session == RUN else 283)
    parsed = t.parse_offer(c)
    assert parsed.coordinator == ""  # not carried: the pinned key gives it back
    v = t.verify_offer(parsed, public_raw(COORD), now=NOW, expected_session=session)
    assert v == ok.offer and v.digest() == ok.offer.digest()
    assert v.coordinator == fingerprint(public_raw(COORD))
    # line breaks and spaces from a copy are ignored, as in the text form
    spaced = "\n".join(c[i : i + 40] for i in range(0, len(c), 40))
    assert t.parse_offer(spaced) == parsed
    # the text form still reads as before
    assert t.parse_offer(ok.offer.to_text()) == ok.offer


def test_a_blob_sealed_to_the_compact_offer_opens_at_the_coordinator():
    ok = offer()
    blob, sas_words = t.seal_to_offer(
        ok.offer.to_compact(), SHARE, trusted_coordinator=public_raw(COORD), now=NOW,
        expected_session=RUN,
    )  # fmt: skip
    got = t.open_blob(blob, ok, now=NOW, expected_session=RUN)
    assert got.share == SHARE and got.sas == sas_words


def test_tampering_and_another_coordinator_are_refused():
    ok = offer()
    c = ok.offer.to_compact()
    pin = public_raw(COORD)
    # any changed digit: the signature (or the packing) no longer holds
    for i in (1, 40, 120, 200, 321):
        bad = c[:i] + str((int(c[i]) + 1) % 10) + c[i + 1 :]
        with pytest.raises(t.TransportError) as e:
            t.verify_offer(t.parse_offer(bad), pin, now=NOW)
        assert e.value.reason in ("bad-signature", "malformed")
    for bad in (c[:-1], c + "0", "9" + c[1:], c.replace(c[5], "x", 1)):
        with pytest.raises(t.TransportError):
            t.verify_offer(t.parse_offer(bad), pin, now=NOW)
    # an insider re-signs the offer with their own key (to take the hand-ins): the
    # custodian's pinned coordinator key refuses it, though the fingerprint is not carried
    forged = t.make_offer(ceremony_id=GEN, epoch=1, session=RUN, coordinator=MALLORY, now=NOW)
    with pytest.raises(t.TransportError) as e:
        t.seal_to_offer(forged.offer.to_compact(), SHARE, trusted_coordinator=pin, now=NOW,
                        expected_session=RUN)  # fmt: skip
    assert e.value.reason == "bad-signature"
    # and a compact offer for another running ceremony is refused as for the text form
    with pytest.raises(t.TransportError) as e:
        t.verify_offer(t.parse_offer(c), pin, now=NOW, expected_session=GEN)
    assert e.value.reason == "wrong-session"


def test_what_the_compact_form_cannot_carry_is_refused_so_the_text_is_used():
    odd = t.make_offer(ceremony_id="recover-A", epoch=1, session="recover-A", coordinator=COORD,
                       now=NOW)  # fmt: skip
    with pytest.raises(ValueError):
        odd.offer.to_compact()
    with pytest.raises(ValueError):
        offer(epoch=128).offer.to_compact()
    assert t.parse_offer(odd.offer.to_text()) == odd.offer


def test_only_the_compact_form_has_its_fingerprint_restored():
    """A text offer whose coordinator field was emptied is refused: the restoring is for
    the compact form alone, which never carries the field."""
    ok = offer()
    doc = t._unarmor(ok.offer.to_text(), t.OFFER_PREFIX)
    doc["signed"]["coordinator"] = ""
    stripped = t.OFFER_PREFIX + t._b64(canonical_bytes(doc))
    with pytest.raises(t.TransportError) as e:
        t.verify_offer(t.parse_offer(stripped), public_raw(COORD), now=NOW)
    assert e.value.reason == "bad-signature"

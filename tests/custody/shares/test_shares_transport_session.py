"""Transport offers are bound to the running ceremony (the *session*), not only to the share
set: the session is signed in the offer, bound into the HKDF info and AAD of the blob, and a
blob for another session is refused with ``wrong-session``, even with the right key."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from custody.canonical import canonical_bytes
from custody.shares import transport
from custody.signing import public_raw

COORD = Ed25519PrivateKey.from_private_bytes(bytes(range(7, 39)))
CPUB = public_raw(COORD)
SHARE = "academic acid acrobat romp chubby"  # opaque text here: nothing is combined
SET, EPOCH = "gen-ceremony", 3


def offer(session: str = "recover-A", seed: int = 1) -> transport.OfferKey:
    return transport.make_offer(
        ceremony_id=SET,
        epoch=EPOCH,
        session=session,
        coordinator=COORD,
        now=1000,
        ttl=600,
        rng=lambda n: bytes([seed]) * n,
    )


def seal(ok: transport.OfferKey) -> str:
    blob, _ = transport.seal_to_offer(
        ok.offer.to_text(), SHARE, trusted_coordinator=CPUB, now=1100, expected_session=None
    )
    return blob


def rearmor(blob: str, **header: object) -> str:
    doc = transport._unarmor(blob, transport.BLOB_PREFIX)
    doc["header"] = {**doc["header"], **header}
    return transport.BLOB_PREFIX + transport._b64(canonical_bytes(doc))


def test_offer_names_and_signs_the_session():
    ok = offer()
    parsed = transport.parse_offer(ok.offer.to_text())
    assert parsed == ok.offer and parsed.session == "recover-A"
    assert ok.offer.payload()["version"] == 2
    transport.verify_offer(parsed, CPUB, now=1100, expected_session="recover-A")
    forged = dataclasses.replace(parsed, session="drill-B")  # same signature, new session
    with pytest.raises(transport.TransportError) as ei:
        transport.verify_offer(forged, CPUB, now=1100)
    assert ei.value.reason == "bad-signature"


def test_the_session_is_never_implied():
    """make_offer and open_blob require the session; seal_to_offer requires the custodian to
    say which session they expect (None only when they were told none)."""
    with pytest.raises(TypeError):
        transport.make_offer(ceremony_id=SET, epoch=0, coordinator=COORD, now=0)  # type: ignore[call-arg]
    a = offer("recover-A")
    with pytest.raises(TypeError):
        transport.seal_to_offer(a.offer, SHARE, trusted_coordinator=CPUB, now=1100)  # type: ignore[call-arg]
    blob = seal(a)
    with pytest.raises(TypeError):
        transport.open_blob(blob, a, now=1200)  # type: ignore[call-arg]
    # a generate verification round names itself as both share set and session
    own = transport.make_offer(ceremony_id=SET, epoch=0, session=SET, coordinator=COORD, now=0)
    assert own.offer.session == SET


def test_blob_for_session_a_is_refused_by_ceremony_b_even_with_the_key():
    a = offer("recover-A")
    blob = seal(a)
    assert transport.open_blob(blob, a, now=1200, expected_session="recover-A").share == SHARE
    with pytest.raises(transport.TransportError) as ei:
        transport.open_blob(blob, a, now=1200, expected_session="drill-B")
    err = ei.value
    assert err.reason == "wrong-session"
    assert "'recover-A'" in err.title and "'drill-B'" in err.title and err.hint
    assert SHARE not in err.title + err.hint


def test_blob_whose_offer_names_another_session_is_refused():
    # B re-signed an offer with A's very key pair (same ceremony, epoch and X25519 key) but
    # its own session: the blob A's custodian sealed names session A and is refused.
    a, b = offer("recover-A", seed=5), offer("drill-B", seed=5)
    assert a.offer.public == b.offer.public
    blob = seal(a)
    with pytest.raises(transport.TransportError) as ei:
        transport.open_blob(blob, b, now=1200, expected_session="drill-B")
    assert ei.value.reason == "wrong-session" and "'recover-A'" in ei.value.title
    # rewriting the header to B's session and digest gets past the checks, not the crypto:
    # the session is in the HKDF info and the AAD
    forged = rearmor(blob, session="drill-B", offer_sha256=b.offer.digest().hex())
    with pytest.raises(transport.TransportError) as ei:
        transport.open_blob(forged, b, now=1200, expected_session="drill-B")
    assert ei.value.reason == "tampered"


def test_custodian_can_pin_the_session():
    a = offer("recover-A")
    with pytest.raises(transport.TransportError) as ei:
        transport.seal_to_offer(
            a.offer, SHARE, trusted_coordinator=CPUB, now=1100, expected_session="recover-Z"
        )
    assert ei.value.reason == "wrong-session"
    blob, _ = transport.seal_to_offer(
        a.offer, SHARE, trusted_coordinator=CPUB, now=1100, expected_session="recover-A"
    )
    assert transport._unarmor(blob, transport.BLOB_PREFIX)["header"]["session"] == "recover-A"


def test_version_1_offers_without_a_session_are_malformed():
    doc = transport._unarmor(offer().offer.to_text(), transport.OFFER_PREFIX)
    signed = {k: v for k, v in doc["signed"].items() if k != "session"}
    v1 = transport.OFFER_PREFIX + transport._b64(
        canonical_bytes({"signed": {**signed, "version": 1}, "sig": doc["sig"]})
    )
    with pytest.raises(transport.TransportError) as ei:
        transport.parse_offer(v1)
    assert ei.value.reason == "malformed"
    with pytest.raises(ValueError):
        transport.make_offer(ceremony_id=SET, epoch=0, session="", coordinator=COORD, now=0)

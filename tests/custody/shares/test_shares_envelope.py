"""Share envelopes, share cards (QR round trip with zxing-cpp), sealing and transport."""

from __future__ import annotations

import io
import json
import random

import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from custody.canonical import canonical_bytes, is_canonical
from custody.config import HsmConfig
from custody.errors import ConfigError
from custody.shares import card, seal, slip39, transport
from custody.shares import envelope as ev
from custody.signing import public_raw

R = random.Random(5)
SHARES = slip39.split(
    bytes(range(32)), groups=[(2, 3)], iteration_exponent=0, rng=lambda n: R.randbytes(n)
)[0]
DEALER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
DPUB = public_raw(DEALER)
FAST = seal.Argon2Params(memory_kib=64, iterations=1, lanes=1)


def envelope_for(share: str, *, ceremony="cer-7", epoch=2, dealer=DEALER):
    return ev.make_envelope(
        slip39.parse_share(share),
        ceremony_id=ceremony,
        policy_digest="ab" * 32,
        epoch=epoch,
        custodian="cd" * 16,
        kcv="a1b2c3",
        dealer=dealer,
    )


def test_envelope_is_canonical_deterministic_and_round_trips():
    e = envelope_for(SHARES[1])
    raw = e.to_bytes()
    assert is_canonical(raw) and raw == envelope_for(SHARES[1]).to_bytes()
    doc = json.loads(raw)
    assert set(doc) == {"signed", "signatures"} and doc["signed"]["version"] == 1
    assert ev.load_envelope(raw) == e
    ev.verify_share(SHARES[1], e, DPUB, expected_ceremony="cer-7", expected_epoch=2)
    for w in SHARES[1].split()[3:]:  # the envelope never holds the share words
        assert f'"{w}"' not in raw.decode() and f" {w} " not in raw.decode()


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"expected_ceremony": "cer-8"}, "wrong-ceremony"),
        ({"expected_epoch": 3}, "wrong-epoch"),
    ],
)
def test_envelope_binding_errors(kwargs, reason):
    with pytest.raises(ev.EnvelopeError) as ei:
        ev.verify_share(SHARES[0], envelope_for(SHARES[0]), DPUB, **kwargs)
    assert ei.value.reason == reason


def test_substituted_share_and_forged_signature():
    e = envelope_for(SHARES[0])
    with pytest.raises(ev.EnvelopeError) as ei:
        ev.verify_share(SHARES[1], e, DPUB)
    assert ei.value.reason == "wrong-index"
    other = slip39.split(bytes(32), groups=[(2, 3)], iteration_exponent=0)[0][0]
    with pytest.raises(ev.EnvelopeError) as ei:
        ev.verify_share(other, e, DPUB)
    assert ei.value.reason == "commitment-mismatch"
    with pytest.raises(ev.EnvelopeError) as ei:
        ev.verify_share(SHARES[0], e, public_raw(Ed25519PrivateKey.generate()))
    assert ei.value.reason == "bad-signature"
    doc = json.loads(e.to_bytes())
    doc["signed"]["epoch"] = 3  # re-labelled epoch: signature breaks
    with pytest.raises(ev.EnvelopeError) as ei:
        ev.verify_share(SHARES[0], ev.load_envelope(json.dumps(doc)), DPUB, expected_epoch=3)
    assert ei.value.reason == "bad-signature"


def test_public_key_file_forms():
    assert ev.load_public_key(ev.public_key_json(DPUB, "dealer")) == (DPUB, "dealer")
    assert ev.load_public_key(DPUB.hex() + "\n") == (DPUB, "")
    for bad in ("zz", "{}", '{"alg":"rsa","public":"00"}', "00" * 31):
        with pytest.raises(ConfigError):
            ev.load_public_key(bad)


def test_card_png_qr_decodes_to_envelope_bytes():
    e = envelope_for(SHARES[2])
    c = card.Card(
        name="Alice Example", label="Generation 2025", words=tuple(SHARES[2].split()), envelope=e
    )
    img = Image.open(io.BytesIO(card.render(c, "png")))
    assert img.size == (card.W, card.H)
    found = zxingcpp.read_barcodes(img)
    assert len(found) == 1 and found[0].bytes == e.to_bytes()
    assert found[0].ec_level in ("Q", "H")


def test_card_svg_pdf_and_terminal():
    e = envelope_for(SHARES[2])
    c = card.Card(name="A & B <x>", label="L", words=tuple(SHARES[2].split()), envelope=e)
    svg = card.render(c, "svg").decode()
    assert svg.startswith("<svg") and "A &amp; B &lt;x&gt;" in svg and "<path" in svg
    assert f"33. {SHARES[2].split()[32]}" in svg and e.short_fingerprint() in svg
    assert card.render(c, "pdf").startswith(b"%PDF")
    text = card.qr_terminal(e.to_bytes())
    rows = text.splitlines()
    assert len({len(r) for r in rows}) == 1 and set(text) <= set("\u2580\u2584\u2588 \n")
    assert "Alice" not in repr(c) and SHARES[2].split()[5] not in repr(c)
    with pytest.raises(ValueError):
        card.make_qr(b"x", level="L")


# --- sealing ----------------------------------------------------------------------------


def test_passphrase_seal_round_trip_and_wrong_passphrase():
    env = envelope_for(SHARES[0]).to_bytes()
    sealed = seal.seal_with_passphrase(
        SHARES[0], b"correct horse battery staple", envelope=env, params=FAST
    )
    assert SHARES[0].split()[4].encode() not in sealed
    assert (
        seal.unseal_with_passphrase(sealed, b"correct horse battery staple", envelope=env)
        == SHARES[0]
    )
    with pytest.raises(seal.SealError, match="Wrong passphrase"):
        seal.unseal_with_passphrase(sealed, b"correct horse battery stapla")
    with pytest.raises(seal.SealError, match="different envelope"):
        seal.unseal_with_passphrase(
            sealed, b"correct horse battery staple", envelope=envelope_for(SHARES[1]).to_bytes()
        )
    doc = json.loads(sealed)
    doc["header"]["envelope_sha256"] = "00" * 32  # the header is AAD
    with pytest.raises(seal.SealError):
        seal.unseal_with_passphrase(canonical_bytes(doc), b"correct horse battery staple")


def test_default_argon2_parameters_are_rfc9106_second_option():
    p = seal.Argon2Params()
    assert (p.memory_kib, p.iterations, p.lanes) == (65536, 3, 4)
    with pytest.raises(ValueError):
        seal.Argon2Params(memory_kib=2 << 20)


@pytest.mark.hsm
def test_token_sealing_against_softhsm(softhsm_token, tmp_path):
    from custody.hsm.pkcs11.adapter import open_hsm

    _conf, label, pin = softhsm_token
    with open_hsm(HsmConfig(token_label=label), tmp_path, pin) as hsm:
        pub = hsm.ensure_ecdh_key("share-seal-test")
        sealed = seal.seal_to_token(SHARES[1], pub, key_label="share-seal-test")
        assert seal.unseal_with_token(sealed, hsm) == SHARES[1]
        other = hsm.ensure_ecdh_key("share-seal-other")
        sealed2 = seal.seal_to_token(SHARES[1], other, key_label="share-seal-other")
        doc = json.loads(sealed2)
        doc["header"]["key_label"] = "share-seal-test"  # another token key: refused
        with pytest.raises(seal.SealError):
            seal.unseal_with_token(canonical_bytes(doc), hsm)
        with pytest.raises(seal.SealError, match="passphrase"):
            seal.unseal_with_token(
                seal.seal_with_passphrase(SHARES[1], b"ochre pylon marsh 4417", params=FAST), hsm
            )


# --- transport --------------------------------------------------------------------------

COORD = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
CPUB = public_raw(COORD)


SESSION = "recover-9"  # the running ceremony that opens the hand-ins


def offer(ceremony="cer-7", epoch=2, now=1000):
    return transport.make_offer(
        ceremony_id=ceremony, epoch=epoch, session=SESSION, coordinator=COORD, now=now, ttl=600
    )


def test_transport_round_trip_with_matching_sas():
    ok = offer()
    env = envelope_for(SHARES[0]).to_bytes()
    blob, sas = transport.seal_to_offer(
        ok.offer.to_text(),
        SHARES[0],
        trusted_coordinator=CPUB,
        now=1100,
        expected_session=SESSION,
        envelope=env,
    )
    assert blob.startswith("custody-blob:") and SHARES[0].split()[4] not in blob
    key = transport.load_offer_key(ok.to_json())
    got = transport.open_blob(blob, key, now=1200, expected_session=SESSION)
    assert (got.share, got.envelope, got.sas) == (SHARES[0], env, sas)
    assert len(sas.split()) == 4 and SHARES[0] not in repr(got) and "private" not in repr(key)


def test_offer_checks_signature_expiry_and_envelope_binding():
    ok = offer()
    with pytest.raises(transport.TransportError) as ei:
        transport.seal_to_offer(
            ok.offer, SHARES[0], trusted_coordinator=DPUB, now=1100, expected_session=SESSION
        )
    assert ei.value.reason == "bad-signature"
    with pytest.raises(transport.TransportError) as ei:
        transport.seal_to_offer(
            ok.offer, SHARES[0], trusted_coordinator=CPUB, now=1601, expected_session=SESSION
        )
    assert ei.value.reason == "expired"
    env = envelope_for(SHARES[0], ceremony="cer-other").to_bytes()
    with pytest.raises(transport.TransportError) as ei:
        transport.seal_to_offer(
            ok.offer,
            SHARES[0],
            trusted_coordinator=CPUB,
            now=1100,
            expected_session=SESSION,
            envelope=env,
        )
    assert ei.value.reason == "wrong-ceremony"
    with pytest.raises(transport.TransportError) as ei:
        transport.seal_to_offer(
            ok.offer,
            SHARES[0],
            trusted_coordinator=CPUB,
            now=1100,
            expected_session=SESSION,
            expected_epoch=3,
        )
    assert ei.value.reason == "wrong-epoch"


def test_blob_replay_into_another_ceremony_or_epoch_or_offer_is_rejected():
    a = offer()
    blob, _ = transport.seal_to_offer(
        a.offer, SHARES[0], trusted_coordinator=CPUB, now=1100, expected_session=SESSION
    )
    for other, reason in (
        (offer(ceremony="cer-8"), "wrong-ceremony"),
        (offer(epoch=3), "wrong-epoch"),
        (offer(), "wrong-offer"),
    ):
        with pytest.raises(transport.TransportError) as ei:
            transport.open_blob(blob, other, now=1100, expected_session=SESSION)
        assert ei.value.reason == reason
    with pytest.raises(transport.TransportError) as ei:
        transport.open_blob(blob, a, now=1601, expected_session=SESSION)
    assert ei.value.reason == "expired"


def test_tampered_blob_is_rejected():
    a = offer()
    blob, _ = transport.seal_to_offer(
        a.offer, SHARES[0], trusted_coordinator=CPUB, now=1100, expected_session=SESSION
    )
    body = transport._unarmor(blob, "custody-blob:")
    ct = body["ct"]
    body["ct"] = ("A" if ct[0] != "A" else "B") + ct[1:]
    forged = "custody-blob:" + transport._b64(canonical_bytes(body))
    with pytest.raises(transport.TransportError) as ei:
        transport.open_blob(forged, a, now=1100, expected_session=SESSION)
    assert ei.value.reason == "tampered"

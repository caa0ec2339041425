"""Root-key blob formats (docs/formats.md): CSB2 opens only under its RK, strictly; the older
CSB1 still opens for recovery. The in-token half is in test_hsm_adapter.py and
test_root_sealing.py."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from ceremonies.runner import rkseal
from custody.canonical import canonical_bytes
from custody.errors import CeremonyError, IntegrityError


def _csb2(rk: bytes, root: bytes, v: int) -> bytes:
    """A CSB2 blob made in software exactly as the token makes it (test-only)."""
    eph = ec.generate_private_key(ec.SECP256R1())
    rk_pub = rkseal.rk_public(rk)
    z = eph.exchange(
        ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), rk_pub)
    )
    epk = eph.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    doc = {
        "v": v,
        "curve": "p256",
        "epk": epk.hex(),
        "rk": hashlib.sha256(rk_pub).hexdigest(),
        "wrapped": aes_key_wrap_with_padding(z, root).hex(),
    }
    return rkseal.SEALED_MAGIC + canonical_bytes(doc)


def test_rk_public_is_a_deterministic_p256_point():
    rk = os.urandom(32)
    pub = rkseal.rk_public(rk)
    assert len(pub) == 65 and pub[0] == 4 and rkseal.rk_public(rk) == pub
    assert rkseal.can_seal(pub) and not rkseal.can_seal(os.urandom(32))
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)  # on the curve
    with pytest.raises(CeremonyError):
        rkseal.require_sealable(os.urandom(32))  # an X25519 share set: reshare first


def test_csb2_opens_only_under_its_rk_and_strictly():
    rk, root = os.urandom(32), os.urandom(32)
    blob = _csb2(rk, root, 4)
    key, wrapped = rkseal.open_blob(blob, rk, root_version=4)
    assert aes_key_unwrap_with_padding(key, wrapped) == root
    assert rkseal.sealed_to(blob) == hashlib.sha256(rkseal.rk_public(rk)).hexdigest()
    doc = json.loads(blob[4:])
    bad = [
        (blob, os.urandom(32), 4),  # another RK
        (blob, rk, 5),  # another root version
        (rkseal.SEALED_MAGIC + json.dumps(doc, indent=1).encode(), rk, 4),  # not canonical
        (rkseal.SEALED_MAGIC + canonical_bytes({**doc, "curve": "x25519"}), rk, 4),
        (rkseal.SEALED_MAGIC + canonical_bytes({**doc, "epk": "04" + "00" * 64}), rk, 4),
        (blob[:-9], rk, 4),
    ]
    for b, k, v in bad:
        with pytest.raises(IntegrityError):
            rkseal.open_blob(b, k, root_version=v)


def test_legacy_csb1_still_opens():
    rk, e_key, root = os.urandom(32), os.urandom(32), os.urandom(32)
    priv = X25519PrivateKey.from_private_bytes(rkseal._hkdf(rk, b"custody/rk-x25519/v1"))
    rk_pub = priv.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    k = rkseal._hkdf(
        eph.exchange(X25519PublicKey.from_public_bytes(rk_pub)) + eph_pub + rk_pub,
        b"custody/root-blob-seal/v1",
    )
    nonce = os.urandom(12)
    blob = rkseal.LEGACY_MAGIC + canonical_bytes(
        {
            "v": 2,
            "epk": eph_pub.hex(),
            "nonce": nonce.hex(),
            "sealed": AESGCM(k).encrypt(nonce, e_key, b"custody/root/v2").hex(),
            "wrapped": aes_key_wrap_with_padding(e_key, root).hex(),
        }
    )
    key, wrapped = rkseal.open_blob(blob, rk, root_version=2)
    assert key == e_key and aes_key_unwrap_with_padding(key, wrapped) == root
    with pytest.raises(IntegrityError):
        rkseal.open_blob(blob, rk, root_version=3)


def test_a_blob_under_rk_is_returned_as_is():
    rk = os.urandom(32)
    raw = aes_key_wrap_with_padding(rk, os.urandom(32))
    assert rkseal.open_blob(raw, rk, root_version=1) == (rk, raw)


def test_wrap_format_names_what_a_token_must_unwrap_to_recover_the_root():
    """recover's hsm-check refuses a token that cannot open the blobs' format before any
    share is asked for; the format comes from the blob (or the root inside a sealed one)."""
    from custody.hsm import RFC3394_TAG

    raw = os.urandom(40)
    assert rkseal.wrap_format(raw) == "rfc5649"
    assert rkseal.wrap_format(RFC3394_TAG + raw) == "rfc3394"
    for inner, fmt in ((raw, "rfc5649"), (RFC3394_TAG + raw, "rfc3394")):
        doc = {"v": 2, "curve": "p256", "epk": "04", "rk": "00", "wrapped": inner.hex()}
        assert rkseal.wrap_format(rkseal.SEALED_MAGIC + canonical_bytes(doc)) == fmt
    with pytest.raises(IntegrityError):
        rkseal.wrap_format(rkseal.SEALED_MAGIC + b"{not json")

"""ECDSA P-256 audit keys end to end: a token without CKM_EDDSA signs checkpoints with
P-256, and `audit verify` checks them with the key the auditor pinned, with its algorithm
recorded and bound (no key is ever read as another algorithm)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from custody.audit.log import AuditLog
from custody.audit.records import check_proof
from custody.audit.signers import (
    Ed25519Signer,
    HsmSigner,
    TrustKey,
    parse_trust_key,
    verify_signature,
)
from custody.config import HsmConfig
from custody.errors import UsageError

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
KEY = b"k" * 32


def _p256() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    k = ec.generate_private_key(ec.SECP256R1())
    return k, k.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _raw_sig(k: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(k.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_ecdsa_p256_signatures_verify_in_one_form_only():
    k, pub = _p256()
    sig = _raw_sig(k, b"data")
    assert verify_signature("ecdsa-p256", pub, sig, b"data")
    assert not verify_signature("ecdsa-p256", pub, sig, b"datA")
    assert not verify_signature("ecdsa-p256", pub, sig[:-1] + bytes([sig[-1] ^ 1]), b"data")
    # the algorithm goes with the key's one encoding: never read as another algorithm
    assert not verify_signature("ed25519", pub, sig, b"data")
    assert not verify_signature("ecdsa-p256", pub[1:33], sig, b"data")
    compressed = k.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    assert not verify_signature("ecdsa-p256", compressed, sig, b"data")
    off_curve = pub[:-1] + bytes([pub[-1] ^ 1])
    assert not verify_signature("ecdsa-p256", off_curve, sig, b"data")
    # r or s out of range, a DER signature, an unknown algorithm
    assert not verify_signature("ecdsa-p256", pub, bytes(32) + sig[32:], b"data")
    assert not verify_signature("ecdsa-p256", pub, sig[:32] + N.to_bytes(32, "big"), b"data")
    assert not verify_signature(
        "ecdsa-p256", pub, k.sign(b"data", ec.ECDSA(hashes.SHA256())), b"data"
    )
    assert not verify_signature("rsa", pub, sig, b"data")
    ed = Ed25519Signer.from_seed("e", b"\x01" * 32)
    assert not verify_signature("ecdsa-p256", ed.public, ed.sign(b"data"), b"data")
    assert verify_signature("ed25519", ed.public, ed.sign(b"data"), b"data")


def test_ecdsa_trust_keys_need_json_and_a_point_on_the_curve():
    _k, pub = _p256()
    doc = {"alg": "ecdsa-p256", "public": pub.hex(), "name": "hsm-audit"}
    key = parse_trust_key(json.dumps(doc).encode())
    assert (key.alg, key.public, key.name) == ("ecdsa-p256", pub, "hsm-audit")
    bad = [
        {**doc, "public": pub.hex()[:-2] + format(pub[-1] ^ 1, "02x")},  # off the curve
        {**doc, "alg": "ed25519"},  # a P-256 point claimed as Ed25519
        {**doc, "public": pub[:33].hex()},  # not the uncompressed form
        {**doc, "alg": "ecdsa-p384"},
    ]
    for d in bad:
        with pytest.raises(UsageError):
            parse_trust_key(json.dumps(d).encode())
    with pytest.raises(UsageError):
        parse_trust_key(pub.hex().encode())  # a bare hex line is always Ed25519 (64 hex)
    ed = Ed25519Signer.from_seed("e", b"\x01" * 32)
    with pytest.raises(UsageError):  # an Ed25519 key claimed as P-256
        parse_trust_key(json.dumps({"alg": "ecdsa-p256", "public": ed.public.hex()}).encode())


def _log(tmp_path: Path) -> AuditLog:
    log = AuditLog(tmp_path / "audit.db", audit_key=KEY, durable=False, clock=lambda: 1_800_000_000)
    for i in range(5):
        log.append("secret.get", f"svc{i}/db", "alice", details={"i": i})
    return log


@pytest.mark.hsm
def test_an_ecdsa_token_audit_key_signs_checkpoints_that_the_pinned_key_verifies(
    softhsm_token, tmp_path
):
    """SoftHSM's key limited to ECDSA P-256 stands for a token without CKM_EDDSA (NSS
    softokn, whose CLI run is in tests/custody/hsm/test_other_tokens.py)."""
    from custody.hsm.pkcs11.adapter import open_hsm

    conf, label, pin = softhsm_token
    hsm = open_hsm(
        HsmConfig(token_label=label), Path(conf).parent, pin, signing_algorithms=("ecdsa-p256",)
    )
    try:
        signer = HsmSigner("hsm-audit", hsm, f"audit-ec-{tmp_path.name}"[:60], ("ecdsa-p256",))
        assert signer.alg == "ecdsa-p256" and len(signer.public) == 65
        log = _log(tmp_path)
        cp = log.checkpoint(signer)
        assert cp["signatures"][0]["alg"] == "ecdsa-p256"
        pinned = TrustKey.of(signer)
        rep = log.verify([pinned])
        assert rep.ok, rep
        assert "is in the log" in check_proof(log.proof(2), [pinned])
        # another P-256 key pinned: nothing counts, verify fails
        _k, other = _p256()
        assert not log.verify([TrustKey(name="hsm-audit", alg="ecdsa-p256", public=other)]).ok
    finally:
        hsm.close()


@pytest.mark.hsm
def test_a_relabelled_algorithm_in_a_checkpoint_is_not_counted(softhsm_token, tmp_path):
    """The operator with the disk rewrites the checkpoint's recorded alg: a signature is
    counted only under the pinned key's own algorithm, with a matching record."""
    import sqlite3

    from custody.hsm.pkcs11.adapter import open_hsm

    conf, label, pin = softhsm_token
    hsm = open_hsm(
        HsmConfig(token_label=label), Path(conf).parent, pin, signing_algorithms=("ecdsa-p256",)
    )
    try:
        signer = HsmSigner("hsm-audit", hsm, f"audit-rl-{tmp_path.name}"[:60], ("ecdsa-p256",))
        log = _log(tmp_path)
        log.checkpoint(signer)
        pinned = [TrustKey.of(signer)]
        assert log.verify(pinned).ok
        log.close()
        con = sqlite3.connect(tmp_path / "audit.db")
        with con:
            con.execute(
                'UPDATE checkpoints SET line = replace(line, \'"alg":"ecdsa-p256"\', '
                '\'"alg":"ed25519"\')'
            )
        con.close()
        again = AuditLog(
            tmp_path / "audit.db", audit_key=KEY, durable=False, clock=lambda: 1_800_000_000
        )
        rep = again.verify(pinned)
        assert not rep.ok, rep
        assert any("no valid signature by a pinned key" in p for p in rep.problems), rep
        again.close()
    finally:
        hsm.close()

"""The PKCS#11 adapter against a real SoftHSMv2 token (no mock of PKCS#11).

Every test uses its own key labels, so tests can share the session token of a worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from custody.config import HsmConfig
from custody.errors import HsmError, IntegrityError, KeyNotFound, SessionClosed
from custody.hsm import KeyExists, KeyNotExtractable, KeyRef, kcv_of_bytes

pytestmark = pytest.mark.hsm


@pytest.fixture
def name(hsm):
    """A key label unique to this test; its versions are destroyed afterwards."""
    label = f"t{uuid.uuid4().hex[:10]}"
    yield label
    if hsm._login is not None:
        for ref in hsm.list_keys(label):
            hsm.destroy_key(ref.label, ref.version)


# --- KCV -------------------------------------------------------------------------------
def test_kcv_of_bytes_known_answers():
    # FIPS-197 style known answers: AES(0^k, 0^128) = 66e94bd4... (128) / dc95c078... (256)
    assert kcv_of_bytes(bytes(16)) == "66e94b"
    assert kcv_of_bytes(bytes(32)) == "dc95c0"
    with pytest.raises(ValueError):
        kcv_of_bytes(bytes(20))


def test_token_kcv_equals_in_process_kcv_for_imported_key(hsm, name):
    rk, known = os.urandom(32), bytes(range(32))
    blob = aes_key_wrap_with_padding(rk, known)  # RFC 5649 blob made outside the token
    ref = hsm.import_wrapped(name, 1, rk, blob)
    assert ref.kcv == kcv_of_bytes(known) == hsm.find_key(name, 1).kcv
    assert ref.extractable is False


# --- AES keys on the token ----------------------------------------------------------------
def test_generate_find_list_destroy(hsm, name):
    a = hsm.generate_aes_key(name, 1, extractable=False)
    b = hsm.generate_aes_key(name, 2, extractable=True)
    assert isinstance(a, KeyRef) and len(a.kcv) == 6 and a.kcv != b.kcv
    assert hsm.find_key(name, 1) == a
    assert [(r.version, r.extractable) for r in hsm.list_keys(name)] == [(1, False), (2, True)]
    assert {(r.label, r.version) for r in hsm.list_keys()} >= {(name, 1), (name, 2)}
    with pytest.raises(KeyExists):
        hsm.generate_aes_key(name, 1, extractable=False)
    hsm.destroy_key(name, 1)
    with pytest.raises(KeyNotFound) as err:
        hsm.find_key(name, 1)
    assert err.value.hint
    with pytest.raises(KeyNotFound):
        hsm.destroy_key(name, 1)


def test_root_key_flow(hsm, name):
    """DESIGN.md: generate extractable, export under RK, seal, re-export fails, restore."""
    root = hsm.generate_aes_key(name, 1, extractable=True)
    rk = os.urandom(32)
    blob = hsm.export_wrapped(name, 1, rk)
    assert len(blob) == 40
    # The blob is plain RFC 5649: an independent implementation opens it to the same key.
    assert kcv_of_bytes(aes_key_unwrap_with_padding(rk, blob)) == root.kcv
    nonce, ct = hsm.encrypt(name, 1, b"the data key", b"aad-1")

    hsm.set_non_extractable(name, 1)
    assert hsm.find_key(name, 1).extractable is False
    with pytest.raises(KeyNotExtractable) as err:
        hsm.export_wrapped(name, 1, rk)
    assert isinstance(err.value, HsmError) and err.value.hint
    hsm.set_non_extractable(name, 1)  # idempotent

    restored = hsm.import_wrapped(name, 2, rk, blob)
    assert restored.kcv == root.kcv and restored.extractable is False
    assert hsm.decrypt(name, 2, nonce, ct, b"aad-1") == b"the data key"
    with pytest.raises(KeyNotExtractable):
        hsm.export_wrapped(name, 2, rk)
    with pytest.raises(KeyExists):
        hsm.import_wrapped(name, 2, rk, blob)


def test_import_wrapped_rejects_wrong_rk_and_bad_blobs(hsm, name):
    hsm.generate_aes_key(name, 1, extractable=True)
    rk = os.urandom(32)
    blob = hsm.export_wrapped(name, 1, rk)
    with pytest.raises(IntegrityError):
        hsm.import_wrapped(name, 2, os.urandom(32), blob)
    with pytest.raises(IntegrityError):
        hsm.import_wrapped(name, 2, rk, bytes([blob[0] ^ 1]) + blob[1:])
    with pytest.raises(IntegrityError):
        hsm.import_wrapped(name, 2, rk, aes_key_wrap_with_padding(rk, bytes(24)))
    with pytest.raises(ValueError):
        hsm.import_wrapped(name, 2, b"short", blob)
    with pytest.raises(KeyNotFound):
        hsm.find_key(name, 2)  # nothing half-made


def test_gcm_round_trip_and_tamper(hsm, name):
    hsm.generate_aes_key(name, 1, extractable=False)
    nonce, ct = hsm.encrypt(name, 1, b"secret value", b"ctx")
    nonce2, _ = hsm.encrypt(name, 1, b"secret value", b"ctx")
    assert len(nonce) == 12 and nonce != nonce2 and len(ct) == len(b"secret value") + 16
    assert hsm.decrypt(name, 1, nonce, ct, b"ctx") == b"secret value"
    empty_nonce, empty_ct = hsm.encrypt(name, 1, b"", b"")
    assert hsm.decrypt(name, 1, empty_nonce, empty_ct, b"") == b""
    flipped = bytes([ct[0] ^ 1]) + ct[1:]
    for args in [
        (nonce, flipped, b"ctx"),
        (nonce, ct, b"ctX"),
        (nonce2, ct, b"ctx"),
        (nonce, ct[:-1], b"ctx"),
        (nonce, ct[:4], b"ctx"),
    ]:
        with pytest.raises(IntegrityError) as err:
            hsm.decrypt(name, 1, *args)
        assert err.value.__cause__ is not None and "secret" not in str(err.value)
    hsm.generate_aes_key(name, 2, extractable=False)
    with pytest.raises(IntegrityError):
        hsm.decrypt(name, 2, nonce, ct, b"ctx")
    with pytest.raises(ValueError):
        hsm.decrypt(name, 1, nonce[:8], ct, b"ctx")
    # the session is still usable after a failed tag check
    assert hsm.decrypt(name, 1, nonce, ct, b"ctx") == b"secret value"


def test_wrap_bytes_is_rfc5649_and_round_trips(hsm, name):
    kek = bytes(range(100, 132))
    hsm.import_wrapped(name, 1, b"r" * 32, aes_key_wrap_with_padding(b"r" * 32, kek), use="wrap")
    for dek in (
        os.urandom(32),
        os.urandom(16),
        os.urandom(64),
        bytes(31) + b"\x01",
        os.urandom(31) + b"\0",
        bytes(32),
    ):
        blob = hsm.wrap_bytes(name, 1, dek)
        assert aes_key_unwrap_with_padding(kek, blob) == dek  # RFC 5649 interop
        assert hsm.unwrap_bytes(name, 1, blob) == dek
        assert hsm.unwrap_bytes(name, 1, aes_key_wrap_with_padding(kek, dek)) == dek
    with pytest.raises(IntegrityError):
        hsm.unwrap_bytes(name, 1, bytes([blob[3] ^ 0x40]) + blob[1:])
    with pytest.raises(IntegrityError):
        hsm.unwrap_bytes(name, 1, blob[:7])
    for bad in (b"", b"x" * 20, b"y" * 7):
        with pytest.raises(ValueError):
            hsm.wrap_bytes(name, 1, bad)
    with pytest.raises(KeyNotFound):
        hsm.wrap_bytes(name, 9, b"x" * 32)


def test_unwrap_bytes_refuses_lengths_softhsm_cannot_reproduce(hsm, name):
    """SoftHSM 2.6.1 keeps KWP padding on unwrap; a 20-byte key must not come back as 24."""
    kek = bytes(range(32))
    hsm.import_wrapped(name, 1, b"r" * 32, aes_key_wrap_with_padding(b"r" * 32, kek), use="wrap")
    blob = aes_key_wrap_with_padding(kek, b"k" * 20)
    try:
        assert hsm.unwrap_bytes(name, 1, blob) == b"k" * 20  # a token that gets it right
    except IntegrityError as err:
        assert "exact length" in err.title


# --- signing and ECDH -----------------------------------------------------------------
def test_ed25519_signature_verifies_with_cryptography(hsm, name):
    alg, pub = hsm.ensure_signing_key(name)
    assert alg == "ed25519" and len(pub) == 32
    assert hsm.ensure_signing_key(name) == (alg, pub)  # idempotent
    sig = hsm.sign(name, b"canonical bytes")
    Ed25519PublicKey.from_public_bytes(pub).verify(sig, b"canonical bytes")  # interop
    hsm.verify(name, b"canonical bytes", sig)
    with pytest.raises(IntegrityError):
        hsm.verify(name, b"canonical byteS", sig)
    with pytest.raises(IntegrityError):
        hsm.verify(name, b"canonical bytes", sig[:-1])
    with pytest.raises(KeyNotFound):
        hsm.sign(name + "-absent", b"x")


def test_ecdsa_p256_fallback_verifies_with_cryptography(softhsm_token, tmp_path, name):
    from custody.hsm.pkcs11.adapter import open_hsm

    _conf, label, pin = softhsm_token
    with open_hsm(
        HsmConfig(token_label=label), tmp_path, pin, signing_algorithms=("ecdsa-p256",)
    ) as h:
        label_ = name + "-ec"
        alg, pub = h.ensure_signing_key(label_)
        assert alg == "ecdsa-p256" and len(pub) == 65 and pub[0] == 4
        sig = h.sign(label_, b"payload")
        assert len(sig) == 64  # raw r||s
        der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
        from cryptography.hazmat.primitives import hashes

        key.verify(der, b"payload", ec.ECDSA(hashes.SHA256()))
        h.verify(label_, b"payload", sig)
        with pytest.raises(IntegrityError):
            h.verify(label_, b"payloaD", sig)
    with pytest.raises(ValueError):
        open_hsm(HsmConfig(token_label=label), tmp_path, pin, signing_algorithms=("rsa",))


def test_ecdh_matches_cryptography(hsm, name):
    pub = hsm.ensure_ecdh_key(name)
    assert len(pub) == 65 and pub[0] == 4 and hsm.ensure_ecdh_key(name) == pub
    peer = ec.generate_private_key(ec.SECP256R1())
    peer_pub = peer.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    mine = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
    secret = hsm.ecdh_derive(name, peer_pub)
    assert len(secret) == 32 and secret == peer.exchange(ec.ECDH(), mine)
    compressed = peer.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    assert hsm.ecdh_derive(name, compressed) == secret
    bad = bytearray(peer_pub)
    bad[-1] ^= 1  # no longer on the curve
    with pytest.raises(IntegrityError):
        hsm.ecdh_derive(name, bytes(bad))
    with pytest.raises(KeyNotFound):
        hsm.ecdh_derive(name + "-absent", peer_pub)
    # the signing key and the ECDH key may share a label without confusion
    alg, _ = hsm.ensure_signing_key(name)
    assert alg == "ed25519" and hsm.ecdh_derive(name, peer_pub) == secret


# --- token facts, selftest, lifecycle ----------------------------------------------------
def test_random_info_repr_and_no_pin(hsm, softhsm_token):
    _conf, label, pin = softhsm_token
    a, b = hsm.random(32), hsm.random(32)
    assert len(a) == 32 and a != b and hsm.random(0) == b"" and len(hsm.random(1000)) == 1000
    with pytest.raises(ValueError):
        hsm.random(-1)
    info = hsm.info()
    assert info.label == label and info.manufacturer == "SoftHSM project" and info.serial
    text = repr(hsm) + str(vars(hsm)) + repr(info)
    assert pin not in text and label in repr(hsm)
    assert "AES_GCM" in hsm.mechanisms()


def test_selftest_reports_everything_and_leaves_nothing(hsm):
    before = hsm.list_keys()
    report = hsm.selftest()
    assert report.ok, report.errors
    assert report.signing_algorithm == "ed25519"
    assert all(report.mechanisms[m] for m in ("AES_GCM", "AES_KEY_WRAP_PAD", "AES_ECB", "EDDSA"))
    assert set(report.checks) == {
        "random",
        "aes_key_gen",
        "aes_gcm",
        "cbc_hmac",
        "kek_seal",
        "key_wrap",
        "kcv",
        "sign_verify",
        "ecdh",
        "allowed_mechanisms",
        "ecdh_wrap",
    }
    # SoftHSM 2.6.1 refuses C_UnwrapKey with CKM_AES_ECB, so the sealing fallback is
    # missing there; it is not needed, GCM works and seals.
    assert report.results.pop("cbc_hmac") == "missing"
    assert set(report.results.values()) == {"pass"}
    assert report.choices["kek_seal"] == "aes-gcm"
    # SoftHSM 2.6.1: CKM_AES_KEY_WRAP_PAD is RFC 5649 byte for byte (checked against
    # cryptography by the known-answer test), and GCM works through python-pkcs11 itself.
    assert report.choices["key_wrap"] == "rfc5649 (CKM_AES_KEY_WRAP_PAD)"
    assert report.choices["aes_gcm"] == "in token"
    assert hsm.list_keys() == before


def test_closed_adapter_raises_session_closed(softhsm_token, tmp_path):
    from custody.hsm.pkcs11.adapter import open_hsm

    _conf, label, pin = softhsm_token
    h = open_hsm(HsmConfig(token_label=label), tmp_path, pin)
    h.close()
    h.close()  # idempotent
    assert "open=False" in repr(h)
    for call in (lambda: h.random(4), lambda: h.list_keys(), lambda: h.selftest()):
        with pytest.raises(SessionClosed) as err:
            call()
        assert err.value.hint


def test_session_lost_mid_use_raises_session_closed(softhsm_token, tmp_path):
    """The PKCS#11 session disappears under the adapter (as on a device reset)."""
    from custody.hsm.pkcs11.adapter import open_hsm

    _conf, label, pin = softhsm_token
    h = open_hsm(HsmConfig(token_label=label), tmp_path, pin)
    try:
        h._login.session.close()  # C_Logout + C_CloseSession behind the adapter's back
        with pytest.raises(SessionClosed) as err:
            h.random(8)
        assert type(err.value.__cause__).__module__ == "pkcs11.exceptions"
    finally:
        h.close()


def test_concurrent_threads_are_serialised(softhsm_token, tmp_path, hsm, name):
    """Two threads, two adapters on one module: without the shared lock SoftHSM fails."""
    from custody.hsm.pkcs11.adapter import open_hsm

    _conf, label, pin = softhsm_token
    hsm.generate_aes_key(name, 1, extractable=False)
    hsm.generate_aes_key(name, 2, extractable=False, use="wrap")  # a key does GCM or KWP
    other = open_hsm(HsmConfig(token_label=label), tmp_path, pin)
    errors: list[BaseException] = []

    def work(h) -> None:
        try:
            for i in range(150):
                msg = f"m{i:07d}".encode()
                assert h.decrypt(name, 1, *h.encrypt(name, 1, msg, b"a"), b"a") == msg
                assert h.unwrap_bytes(name, 2, h.wrap_bytes(name, 2, msg * 4)) == msg * 4
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(h,)) for h in (hsm, other, hsm)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert not errors, errors


# --- issue 11: mechanisms, volatile keys, in-token sealing ---------------------------------
def _raw(hsm, name, version, op):
    """Run *op(key)* on the real token object through the adapter's own session."""
    with hsm._op("probe") as s:
        return op(hsm._secret(s, name, version))


def test_keys_allow_exactly_their_mechanisms_and_refuse_ecb(hsm, name):
    from pkcs11 import Attribute, Mechanism
    from pkcs11 import exceptions as px

    def refused_by_token(op):
        with pytest.raises(HsmError) as err:
            op()
        assert isinstance(err.value.__cause__, px.MechanismInvalid), err.value.__cause__

    def ecb(k):
        return k.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)

    def allowed(k):
        return k[Attribute.ALLOWED_MECHANISMS]

    def widen(k):
        k[Attribute.ALLOWED_MECHANISMS] = [Mechanism.AES_GCM, Mechanism.AES_ECB]

    seal = hsm.generate_aes_key(name, 1, extractable=False)  # roots, hold keys
    wrap = hsm.generate_aes_key(name, 2, extractable=False, use="wrap")
    kek = os.urandom(32)
    imported = hsm.import_wrapped(name, 3, kek, aes_key_wrap_with_padding(kek, os.urandom(32)))
    volatile = hsm.generate_aes_key(name, 4, extractable=True)
    for v in (1, 3, 4):
        assert _raw(hsm, name, v, allowed) == [Mechanism.AES_GCM]
        refused_by_token(lambda v=v: _raw(hsm, name, v, ecb))  # the token refuses AES-ECB
        with pytest.raises(HsmError):  # and no sealing key wraps
            hsm.wrap_bytes(name, v, os.urandom(32))
        assert hsm.decrypt(name, v, *hsm.encrypt(name, v, b"m", b"a"), b"a") == b"m"
    assert _raw(hsm, name, 2, allowed) == [Mechanism.AES_KEY_WRAP_PAD]
    assert _raw(hsm, name, 2, lambda k: (k[Attribute.ENCRYPT], k[Attribute.DECRYPT])) == (
        False,
        False,
    )
    with pytest.raises(HsmError):
        hsm.encrypt(name, 2, b"m", b"a")
    # KCVs still come out, without ECB on the key (CKA_CHECK_VALUE / the import-time KCV)
    assert hsm.find_key(name, 1).kcv == seal.kcv and hsm.find_key(name, 2).kcv == wrap.kcv
    assert hsm.find_key(name, 3).kcv == imported.kcv
    hsm.set_non_extractable(name, 4)  # the locked token copy keeps the restriction
    assert hsm.find_key(name, 4) == KeyRef(label=name, version=4, kcv=volatile.kcv)
    assert _raw(hsm, name, 4, allowed) == [Mechanism.AES_GCM]
    # the restriction cannot be widened afterwards: CKR_ATTRIBUTE_READ_ONLY, or
    # CKR_ACTION_PROHIBITED (0x1b) since the locked keys are also non-modifiable
    for v in (1, 3, 4):
        with pytest.raises(HsmError) as err:
            _raw(hsm, name, v, widen)
        cause = err.value.__cause__
        assert isinstance(cause, px.AttributeReadOnly) or "0x1b" in str(cause), cause
        assert _raw(hsm, name, v, allowed) == [Mechanism.AES_GCM]


def _p256():
    priv = ec.generate_private_key(ec.SECP256R1())
    pub = priv.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return priv, pub


def test_seal_to_public_wraps_inside_the_token_for_the_private_key_holder(hsm, name):
    root = hsm.generate_aes_key(name, 1, extractable=True)
    priv, pub = _p256()
    sealed = hsm.seal_to_public(name, 1, pub)
    assert sealed.kcv == root.kcv and len(sealed.wrapped) == 40
    # the holder of the private key (and only they) derives the wrapping key: ECDH, null KDF
    eph = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sealed.ephemeral_public)
    k = priv.exchange(ec.ECDH(), eph)
    assert kcv_of_bytes(aes_key_unwrap_with_padding(k, sealed.wrapped)) == root.kcv
    other, _ = _p256()
    with pytest.raises(InvalidUnwrap):
        aes_key_unwrap_with_padding(other.exchange(ec.ECDH(), eph), sealed.wrapped)
    # and lands it in a token, non-extractable
    assert hsm.import_wrapped(name, 2, k, sealed.wrapped).kcv == root.kcv
    # a fresh ephemeral key each time
    assert hsm.seal_to_public(name, 1, pub).ephemeral_public != sealed.ephemeral_public
    with pytest.raises(IntegrityError):
        hsm.seal_to_public(name, 1, b"\x04" + bytes(64))  # not a point on P-256
    hsm.set_non_extractable(name, 1)
    with pytest.raises(KeyNotExtractable):
        hsm.seal_to_public(name, 1, pub)


_CHILD = """
import os, signal, sys
from pathlib import Path
from custody.config import HsmConfig
from custody.hsm.pkcs11.adapter import open_hsm
label, name, pin, stage = sys.argv[1:5]
h = open_hsm(HsmConfig(token_label=label), Path("."), pin)
if stage == "list":
    print(sorted((k.version, k.extractable) for k in h.list_keys(name)))
    sys.exit(0)
h.generate_aes_key(name, 1, extractable=True)
if stage in ("sealed", "locked"):
    h.seal_to_public(name, 1, bytes.fromhex(sys.argv[5]))
if stage == "locked":
    h.set_non_extractable(name, 1)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("stage", ["generated", "sealed", "locked"])
def test_a_crash_never_leaves_an_extractable_key(softhsm_token, name, stage):
    """The extractable window is a session object: SIGKILL inside it leaves nothing, and
    after the lock only the non-extractable token copy."""
    _conf, label, pin = softhsm_token
    _priv, pub = _p256()

    def child(st: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", _CHILD, label, name, pin, st, pub.hex()],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert child(stage).returncode == -9
    seen = child("list")
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.strip() == ("[(1, False)]" if stage == "locked" else "[]")


# --- issue 13: the key wrap is chosen by a known-answer test; blobs record their format ---
def test_rfc3394_blobs_record_their_format_and_open_on_an_rfc5649_adapter(
    softhsm_token, tmp_path, hsm, name
):
    """The RFC 3394 fallback (a token whose RFC 5649 fails its known-answer test), forced
    on SoftHSM: the blob is tagged, opens in a session object, and a default adapter (which
    wraps RFC 5649) imports it; a cryptography-made RFC 3394 blob imports to its KCV; a
    tampered one is refused."""
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap

    from custody.hsm import RFC3394_TAG, decode_wrapped, kcv_of_bytes
    from custody.hsm.pkcs11.adapter import open_hsm

    _conf, label, pin = softhsm_token
    kw = open_hsm(HsmConfig(token_label=label), tmp_path, pin, wrap_formats=("rfc3394",))
    try:
        assert kw.preflight()["key_wrap"] == "rfc3394 (CKM_AES_KEY_WRAP)"
        ref = kw.generate_aes_key(name, 1, extractable=True)
        rk = os.urandom(32)
        blob = kw.export_wrapped(name, 1, rk)
        assert blob.startswith(RFC3394_TAG) and len(blob) == 44
        assert decode_wrapped(blob)[0] == "rfc3394"
        assert kw.check_wrapped(rk, blob) == ref.kcv
    finally:
        kw.close()
    assert hsm.preflight()["key_wrap"] == "rfc5649 (CKM_AES_KEY_WRAP_PAD)"
    assert hsm.import_wrapped(name, 2, rk, blob).kcv == ref.kcv
    raw = os.urandom(32)
    made = RFC3394_TAG + aes_key_wrap(rk, raw)
    assert hsm.import_wrapped(name, 3, rk, made).kcv == kcv_of_bytes(raw)
    bad = made[:-1] + bytes([made[-1] ^ 1])
    with pytest.raises(IntegrityError):
        hsm.import_wrapped(name, 4, rk, bad)
    with pytest.raises(IntegrityError):
        hsm.check_wrapped(os.urandom(32), blob)  # another key: the blob does not open


def test_the_raw_gcm_and_wrap_calls_match_cryptography_on_softhsm(hsm):
    """The ctypes workaround for python-pkcs11's output-length bug (used on NSS softokn)
    gives standard AES-GCM and RFC 5649 on SoftHSM too, through python-pkcs11's own
    function list and handles."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
    from pkcs11 import KeyType, Mechanism

    from custody.hsm.pkcs11 import probe, raw

    key_raw, payload, nonce = os.urandom(32), os.urandom(32), os.urandom(12)
    with hsm._op("raw call test") as s:
        slot = int(s.token.slot.slot_id)
        key = probe._secret(s, key_raw, encrypt=True, wrap=True)
        target = probe._secret(s, payload, KeyType.GENERIC_SECRET)
        try:
            ct = raw.gcm_encrypt(s, slot, key.handle, nonce, b"aad", b"m" * 33)
            wrapped = raw.wrap_key(
                s, slot, int(Mechanism.AES_KEY_WRAP_PAD), key.handle, target.handle, 40
            )
            with pytest.raises(raw.RawCallError):  # a wrong slot: the pointer check refuses
                raw.gcm_encrypt(s, slot + 1000, key.handle, nonce, b"", b"m")
        finally:
            probe._destroy(target, key)
    assert AESGCM(key_raw).decrypt(nonce, ct, b"aad") == b"m" * 33
    assert wrapped == aes_key_wrap_with_padding(key_raw, payload)

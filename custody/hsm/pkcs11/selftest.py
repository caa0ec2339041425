"""Functional checks behind ``custody hsm selftest``.

This module owns the list of checks a token must pass before custody trusts it: the RNG,
AES-256 key generation, AES-GCM (including tag rejection), RFC 5649 key wrap with padding
(checked against ``cryptography``, so blobs are portable), the key check value, token
signing, ECDH, CKA_ALLOWED_MECHANISMS being enforced, and the in-token ECDH wrap that seals
a rotated root. Every object it makes is a session object (CKA_TOKEN=false) and is
destroyed before it returns, so nothing is left on the token. It is one of the
``custody.hsm.pkcs11`` modules, the only ones that import ``pkcs11``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from pkcs11 import KDF, Attribute, GCMParams, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as px

from custody.errors import CustodyError
from custody.hsm import KCV_LEN, kcv_of_bytes
from custody.hsm.pkcs11.errors import translate_exception
from custody.hsm.pkcs11.keypairs import ecdh_secret, generate_pair, sign_with, verify_with

KWP = Mechanism.AES_KEY_WRAP_PAD


class _Scratch:
    """Session objects made by the checks, destroyed at the end."""

    def __init__(self, s: Any) -> None:
        self.s = s
        self.objects: list[Any] = []

    def keep(self, *objs: Any) -> Any:
        self.objects.extend(objs)
        return objs[0] if len(objs) == 1 else objs

    def secret(self, raw: bytes, key_type: KeyType = KeyType.AES, **flags: bool) -> Any:
        template = {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: key_type,
            Attribute.VALUE: raw,
            Attribute.TOKEN: False,
            Attribute.SENSITIVE: False,
            Attribute.EXTRACTABLE: True,
            Attribute.ENCRYPT: key_type == KeyType.AES,
            Attribute.DECRYPT: key_type == KeyType.AES,
            Attribute.WRAP: flags.get("wrap", False),
            Attribute.UNWRAP: flags.get("wrap", False),
        }
        return self.keep(self.s.create_object(template))

    def destroy(self) -> None:
        for obj in reversed(self.objects):
            with suppress(px.PKCS11Error):
                obj.destroy()
        self.objects.clear()


def _random(x: _Scratch) -> bool:
    a, b = bytes(x.s.generate_random(256)), bytes(x.s.generate_random(256))
    return len(a) == 32 and a != b and len(set(a)) > 1


def _aes_key_gen(x: _Scratch) -> bool:
    key = x.keep(
        x.s.generate_key(
            KeyType.AES,
            256,
            store=False,
            template={
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
            },
        )
    )
    return int(key[Attribute.VALUE_LEN]) == 32


def _aes_gcm(x: _Scratch) -> bool:
    key = x.secret(os.urandom(32))
    nonce, aad, msg = os.urandom(12), b"custody selftest", b"a message to seal"
    ct = key.encrypt(msg, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad))
    ok = key.decrypt(ct, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad))
    try:
        key.decrypt(
            bytes([ct[0] ^ 1]) + ct[1:],
            mechanism=Mechanism.AES_GCM,
            mechanism_param=GCMParams(nonce, aad),
        )
    except px.PKCS11Error:
        return bytes(ok) == msg  # the tampered ciphertext must be rejected
    return False


def _aes_kwp(x: _Scratch) -> bool:
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

    kek_raw, payload = os.urandom(32), os.urandom(32)
    kek = x.secret(kek_raw, wrap=True)
    tmp = x.secret(payload, KeyType.GENERIC_SECRET)
    blob = bytes(kek.wrap_key(tmp, mechanism=KWP))
    back = x.keep(
        kek.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.GENERIC_SECRET,
            blob,
            mechanism=KWP,
            store=False,
            template={
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: False,
                Attribute.EXTRACTABLE: True,
            },
        )
    )
    # RFC 5649 interop: the token's blob opens with an independent implementation.
    return bytes(back[Attribute.VALUE]) == payload == aes_key_unwrap_with_padding(kek_raw, blob)


def _kcv(x: _Scratch) -> bool:
    raw = bytes(range(32))
    key = x.secret(raw)
    kcv = bytes(key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:KCV_LEN].hex()
    return kcv == kcv_of_bytes(raw)


def _sign_verify(alg: str) -> Callable[[_Scratch], bool]:
    def check(x: _Scratch) -> bool:
        if not alg:
            return False
        pub, priv = x.keep(*generate_pair(x.s, None, alg, Attribute.SIGN, False))
        sig = sign_with(priv, alg, b"custody selftest")
        return verify_with(pub, alg, b"custody selftest", sig) and not verify_with(
            pub, alg, b"custody selftesT", sig
        )

    return check


def _ecdh(x: _Scratch) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from custody.hsm.pkcs11.keypairs import ec_point

    pub, priv = x.keep(*generate_pair(x.s, None, "ecdsa-p256", Attribute.DERIVE, False))
    peer = ec.generate_private_key(ec.SECP256R1())
    peer_pub = peer.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    mine = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ec_point(pub))
    return ecdh_secret(priv, peer_pub) == peer.exchange(ec.ECDH(), mine)


def _allowed_mechanisms(x: _Scratch) -> bool:
    """CKA_ALLOWED_MECHANISMS is honoured: a GCM-only key seals, and refuses AES-ECB."""
    key = x.keep(
        x.s.generate_key(
            KeyType.AES,
            256,
            store=False,
            template={
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
                Attribute.ALLOWED_MECHANISMS: [Mechanism.AES_GCM],
            },
        )
    )
    nonce = os.urandom(12)
    key.encrypt(b"m", mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, b""))
    try:
        key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
    except px.PKCS11Error:
        return True
    return False


def _ecdh_wrap(x: _Scratch) -> bool:
    """The in-token seal of a rotated root: an ephemeral P-256 pair, CKM_ECDH1_DERIVE (null
    KDF) into a non-extractable AES key, RFC 5649 wrap; the blob opens in ``cryptography``
    with the peer's private key to a key with the token's KCV."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from custody.hsm.pkcs11.keypairs import ec_point

    target = x.secret(os.urandom(32))
    want = bytes(target.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:KCV_LEN].hex()
    pub, priv = x.keep(*generate_pair(x.s, None, "ecdsa-p256", Attribute.DERIVE, False))
    peer = ec.generate_private_key(ec.SECP256R1())
    k = x.keep(
        priv.derive_key(
            KeyType.AES,
            256,
            mechanism=Mechanism.ECDH1_DERIVE,
            mechanism_param=(
                KDF.NULL,
                None,
                peer.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint),
            ),
            store=False,
            template={
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: False,
                Attribute.DECRYPT: False,
                Attribute.WRAP: True,
                Attribute.UNWRAP: True,
                Attribute.ALLOWED_MECHANISMS: [KWP],
            },
        )
    )
    blob = bytes(k.wrap_key(target, mechanism=KWP))
    eph = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ec_point(pub))
    return kcv_of_bytes(aes_key_unwrap_with_padding(peer.exchange(ec.ECDH(), eph), blob)) == want


def run_checks(s: Any, signing_algorithm: str) -> tuple[dict[str, bool], dict[str, str]]:
    """Run every check on session *s* (the caller holds the module lock).

    Args:
        s: a logged-in python-pkcs11 session.
        signing_algorithm: "ed25519", "ecdsa-p256", or "" when the token offers neither.

    Returns:
        (check name -> passed, check name -> error title for the failed ones).
    """
    checks: dict[str, Callable[[_Scratch], bool]] = {
        "random": _random,
        "aes_key_gen": _aes_key_gen,
        "aes_gcm": _aes_gcm,
        "aes_kwp": _aes_kwp,
        "kcv": _kcv,
        "sign_verify": _sign_verify(signing_algorithm),
        "ecdh": _ecdh,
        "allowed_mechanisms": _allowed_mechanisms,
        "ecdh_wrap": _ecdh_wrap,
    }
    results: dict[str, bool] = {}
    errors: dict[str, str] = {}
    for name, check in checks.items():
        scratch = _Scratch(s)
        try:
            results[name] = bool(check(scratch))
            if not results[name]:
                errors[name] = "the check gave a wrong result"
        except (px.PKCS11Error, CustodyError, ValueError) as exc:
            results[name] = False
            err = translate_exception(exc, f"run the {name} check")
            errors[name] = err.title if err is not None else type(exc).__name__
        finally:
            scratch.destroy()
    return results, errors

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

from pkcs11 import KDF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as px

from custody.errors import CustodyError
from custody.hsm import KCV_LEN, WRAP_RFC5649, kcv_of_bytes
from custody.hsm.pkcs11.errors import translate_exception
from custody.hsm.pkcs11.keypairs import ecdh_secret, generate_pair, sign_with, verify_with
from custody.hsm.pkcs11.probe import FAIL, MISSING, PASS, TokenProfile, WrapChoice, wrap_with


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


def _ecdh_wrap(x: _Scratch, choice: WrapChoice, slot_id: int) -> bool:
    """The in-token seal of a rotated root: an ephemeral P-256 pair, CKM_ECDH1_DERIVE (null
    KDF) into a non-extractable AES key, the token's key wrap; the blob opens in
    ``cryptography`` with the peer's private key to a key with the token's KCV."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_unwrap_with_padding
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
            },
        )
    )
    blob = wrap_with(x.s, slot_id, choice, k, target, 32)
    eph = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ec_point(pub))
    secret = peer.exchange(ec.ECDH(), eph)
    unwrap = aes_key_unwrap_with_padding if choice.fmt == WRAP_RFC5649 else aes_key_unwrap
    return kcv_of_bytes(unwrap(secret, blob)) == want


def run_checks(
    s: Any, signing_algorithm: str, prof: TokenProfile, mechs: frozenset[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Run every check on session *s* (the caller holds the module lock). Never raises for
    a token failure: each check is ``pass``, ``fail`` or ``missing``.

    Args:
        s: a logged-in python-pkcs11 session.
        signing_algorithm: "ed25519", "ecdsa-p256", or "" when the token offers neither.
        prof: the token's known-answer profile (:func:`custody.hsm.pkcs11.probe.profile`).
        mechs: the names of the mechanisms the token offers.

    Returns:
        (check name -> pass/fail/missing, check name -> why, for the others).
    """
    slot_id = int(s.token.slot.slot_id)
    choice = prof.wrap
    checks: dict[str, tuple[tuple[str, ...], Callable[[_Scratch], bool] | None]] = {
        "random": ((), _random),
        "aes_key_gen": (("AES_KEY_GEN",), _aes_key_gen),
        "aes_gcm": ((), None),
        "cbc_hmac": ((), None),
        "kek_seal": ((), None),
        "key_wrap": ((), None),
        "kcv": (("AES_ECB",), _kcv),
        "sign_verify": (
            () if signing_algorithm else ("EDDSA or ECDSA",),
            _sign_verify(signing_algorithm),
        ),
        "ecdh": (("EC_KEY_PAIR_GEN", "ECDH1_DERIVE"), _ecdh),
        "ecdh_wrap": (
            ("EC_KEY_PAIR_GEN", "ECDH1_DERIVE", *(() if choice else ("a working AES key wrap",))),
            (lambda x: _ecdh_wrap(x, choice, slot_id)) if choice else (lambda x: False),
        ),
    }
    results: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, (needs, check) in checks.items():
        if check is None:  # decided by the known-answer profile
            results[name] = prof.results.get(name, MISSING)
            if name in prof.errors:
                errors[name] = prof.errors[name]
            continue
        missing = [m for m in needs if m not in mechs]
        if missing:
            results[name] = MISSING
            errors[name] = "not offered: " + ", ".join(
                m if " " in m else f"CKM_{m}" for m in missing
            )
            continue
        scratch = _Scratch(s)
        try:
            results[name] = PASS if check(scratch) else FAIL
            if results[name] == FAIL:
                errors[name] = "the check gave a wrong result"
        except Exception as exc:  # noqa: BLE001 (a check reports; it never crashes the selftest)
            results[name] = FAIL
            err = translate_exception(exc, f"run the {name} check")
            if err is None and isinstance(exc, CustodyError):
                err = exc
            errors[name] = err.title if err is not None else type(exc).__name__
        finally:
            scratch.destroy()
    results["allowed_mechanisms"] = PASS if prof.allowed_enforced else MISSING
    if not prof.allowed_enforced:
        errors["allowed_mechanisms"] = "CKA_ALLOWED_MECHANISMS is not enforced (advisory)"
    return results, errors

"""The sealing fallback for tokens without a working in-token AES-GCM: AES-256-CBC-PAD then
HMAC-SHA256 (encrypt then MAC), every key inside the token.

Measured: opencryptoki 3.8.1's soft token offers no CKM_AES_GCM, but has CKM_AES_ECB and
CKM_AES_CBC with C_UnwrapKey, CKM_AES_CBC_PAD and CKM_SHA256_HMAC. One seal key (a root,
a hold key) must give two independent keys, and the token has no key derivation that
custody could use, so each blob carries 64 random bytes *r* and the token unwraps them under
the seal key with CKM_AES_ECB into two session keys (sensitive, non-extractable):

    K_enc = AES-ECB-Dec(seal key, r[0:32])   an AES-256 key, CBC-PAD encrypt/decrypt only
    K_mac = AES-ECB-Dec(seal key, r[32:64])  a generic secret, HMAC-SHA256 sign/verify only

Their values are never outside the token: the host only ever sees *r*. The seal key on
such a token can do nothing but that unwrap (and the AES-ECB of its key check value); it
never encrypts data, so no stored blob holds an (x, AES-Dec(seal key, x)) pair that would
let someone with the disk choose an *r* whose keys they know. A changed *r* gives keys that
nobody knows, so its tag fails.

    blob = "CKS1" || r (64) || iv (16) || AES-CBC-PAD(K_enc, iv, plaintext) || tag (32)
    tag  = HMAC-SHA256(K_mac, DOMAIN || len(aad) (8, big-endian) || aad || blob[:-32])

The tag is computed in the token (C_Sign) and compared before anything is decrypted. It is
one of the ``custody.hsm.pkcs11`` modules, the only ones that import ``pkcs11``.
"""

from __future__ import annotations

import hmac
from contextlib import suppress
from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as px

MAGIC = b"CKS1"
DOMAIN = b"custody/seal/aes-cbc-hmac/v1\0"
KEY_LEN = 32
R_LEN = 2 * KEY_LEN
IV_LEN = 16
TAG_LEN = 32
MECHANISMS = (Mechanism.AES_ECB, Mechanism.AES_CBC_PAD, Mechanism.SHA256_HMAC)
SEAL_KEY_MECHANISMS = [Mechanism.AES_ECB]  # unwrap of r, and the ECB of the KCV


class TagMismatch(ValueError):
    """The blob is malformed or its HMAC does not verify (the adapter makes it an
    IntegrityError)."""


def split(blob: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(r, iv, ciphertext, tag) of a blob, or TagMismatch when it is not one."""
    head = len(MAGIC) + R_LEN + IV_LEN
    n = len(blob) - head - TAG_LEN
    if not blob.startswith(MAGIC) or n < 16 or n % 16:
        raise TagMismatch("not an aes-cbc-hmac sealed blob")
    r, iv = blob[len(MAGIC) : len(MAGIC) + R_LEN], blob[len(MAGIC) + R_LEN : head]
    return r, iv, blob[head:-TAG_LEN], blob[-TAG_LEN:]


def mac_input(aad: bytes, body: bytes) -> bytes:
    return DOMAIN + len(aad).to_bytes(8, "big") + aad + body


def _unwrap(seal_key: Any, r: bytes, kind: str, enforced: bool) -> Any:
    if kind == "enc":
        key_type, use, mechs = (
            KeyType.AES,
            {Attribute.ENCRYPT: True, Attribute.DECRYPT: True},
            [Mechanism.AES_CBC_PAD],
        )
    else:
        key_type, use, mechs = (
            KeyType.GENERIC_SECRET,
            {Attribute.SIGN: True, Attribute.VERIFY: False},
            [Mechanism.SHA256_HMAC],
        )
    return seal_key.unwrap_key(
        ObjectClass.SECRET_KEY,
        key_type,
        r,
        mechanism=Mechanism.AES_ECB,
        store=False,
        template={
            Attribute.TOKEN: False,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.WRAP: False,
            Attribute.UNWRAP: False,
            Attribute.DERIVE: False,
            **use,
            **({Attribute.ALLOWED_MECHANISMS: mechs} if enforced else {}),
        },
    )


def _keys(seal_key: Any, r: bytes, enforced: bool) -> tuple[Any, Any]:
    k_enc = _unwrap(seal_key, r[:KEY_LEN], "enc", enforced)
    try:
        return k_enc, _unwrap(seal_key, r[KEY_LEN:], "mac", enforced)
    except BaseException:
        with suppress(px.PKCS11Error):
            k_enc.destroy()
        raise


def seal(s: Any, seal_key: Any, plaintext: bytes, aad: bytes, *, enforced: bool) -> bytes:
    """Seal *plaintext* under the token key *seal_key* (the caller holds the module lock).

    *enforced*: set CKA_ALLOWED_MECHANISMS on the session keys (tokens that enforce it).
    """
    r = bytes(s.generate_random(8 * R_LEN))
    iv = bytes(s.generate_random(8 * IV_LEN))
    k_enc, k_mac = _keys(seal_key, r, enforced)
    try:
        ct = bytes(k_enc.encrypt(plaintext, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv))
        body = MAGIC + r + iv + ct
        tag = bytes(k_mac.sign(mac_input(aad, body), mechanism=Mechanism.SHA256_HMAC))
    finally:
        for k in (k_enc, k_mac):
            with suppress(px.PKCS11Error):
                k.destroy()
    if len(tag) != TAG_LEN:
        raise TagMismatch("the token's HMAC-SHA256 is not 32 bytes")
    return body + tag


def unseal(s: Any, seal_key: Any, blob: bytes, aad: bytes, *, enforced: bool) -> bytes:
    """Verify the tag in the token, then decrypt. Raises TagMismatch."""
    r, iv, ct, tag = split(blob)
    k_enc, k_mac = _keys(seal_key, r, enforced)
    try:
        # C_Sign and a constant-time compare, not C_Verify: tokens answer a bad HMAC with
        # different errors (NSS softokn 3.87: CKR_DEVICE_ERROR), and the tag is not secret.
        want = bytes(k_mac.sign(mac_input(aad, blob[:-TAG_LEN]), mechanism=Mechanism.SHA256_HMAC))
        if not hmac.compare_digest(want, tag):
            raise TagMismatch("the HMAC-SHA256 tag does not verify")
        try:
            return bytes(k_enc.decrypt(ct, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv))
        except px.PKCS11Error as exc:  # a verified tag with bad padding: a faulty token
            raise TagMismatch("the verified ciphertext did not decrypt") from exc
    finally:
        for k in (k_enc, k_mac):
            with suppress(px.PKCS11Error):
                k.destroy()

"""Root-key blobs: wrapped directly under RK, or sealed to RK's public half.

A generate or reshare ceremony holds RK, so the new root's blob is the token's RFC 5649
wrap of the root under RK (``export_wrapped``). rotate-root and emergency-rotate run
*without* the custodians' shares, yet the new root must stay recoverable by the same
shares. So each share set also records an X25519 public key derived from RK
(HKDF-SHA256, RFC 5869, info ``custody/rk-x25519/v1``); a rotation wraps the new root
under a fresh one-time AES key E inside the token, and seals E to that public key
(X25519 + HKDF-SHA256 + AES-256-GCM, ECIES style). Recovery rebuilds RK, derives the
private half, opens E, and unwraps the root straight into the HSM. E and RK live only in
process memory for the duration of one step; the root's plaintext never leaves the token.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from custody.canonical import canonical_bytes
from custody.errors import IntegrityError

SEALED_MAGIC = b"CSB1"
_INFO_KEY = b"custody/rk-x25519/v1"
_INFO_SEAL = b"custody/root-blob-seal/v1"


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ikm)


def rk_private(rk: bytes) -> X25519PrivateKey:
    """The X25519 private key derived from RK."""
    return X25519PrivateKey.from_private_bytes(_hkdf(rk, _INFO_KEY))


def rk_public(rk: bytes) -> bytes:
    """The raw X25519 public key derived from RK (recorded with the share set)."""
    return (
        rk_private(rk)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def seal_wrapping_key(e_key: bytes, rk_pub: bytes, *, root_version: int, wrapped: bytes) -> bytes:
    """Build a sealed blob: *wrapped* (root under E) plus E sealed to *rk_pub*."""
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    shared = eph.exchange(X25519PublicKey.from_public_bytes(rk_pub))
    k = _hkdf(shared + eph_pub + rk_pub, _INFO_SEAL)
    nonce = os.urandom(12)
    aad = f"custody/root/v{root_version}".encode()
    sealed = AESGCM(k).encrypt(nonce, e_key, aad)
    return SEALED_MAGIC + canonical_bytes(
        {
            "v": root_version,
            "epk": eph_pub.hex(),
            "nonce": nonce.hex(),
            "sealed": sealed.hex(),
            "wrapped": wrapped.hex(),
        }
    )


def is_sealed(blob: bytes) -> bool:
    return blob.startswith(SEALED_MAGIC)


def open_blob(blob: bytes, rk: bytes, *, root_version: int) -> tuple[bytes, bytes]:
    """Return (wrapping key, RFC 5649 blob) to hand to ``Hsm.import_wrapped``.

    Raises:
        IntegrityError: the sealed blob does not open under this RK.
    """
    if not is_sealed(blob):
        return rk, blob
    import json

    try:
        doc = json.loads(blob[len(SEALED_MAGIC) :])
        eph_pub = bytes.fromhex(doc["epk"])
        priv = rk_private(rk)
        mine = priv.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        k = _hkdf(
            priv.exchange(X25519PublicKey.from_public_bytes(eph_pub)) + eph_pub + mine, _INFO_SEAL
        )
        e_key = AESGCM(k).decrypt(
            bytes.fromhex(doc["nonce"]),
            bytes.fromhex(doc["sealed"]),
            f"custody/root/v{root_version}".encode(),
        )
        return e_key, bytes.fromhex(doc["wrapped"])
    except Exception as exc:  # any failure here means: not openable with this RK
        raise IntegrityError(
            f"The blob of root/v{root_version} does not open with this recovery key",
            "The shares belong to another epoch or the blob was altered.",
        ) from exc

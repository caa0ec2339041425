"""Root-key blobs: wrapped directly under RK, or sealed inside the token to RK's public half.

A generate or reshare ceremony holds RK, so the new root's blob is the token's RFC 5649
wrap of the root under RK (``export_wrapped``). rotate-root and emergency-rotate run
*without* the custodians' shares, yet the new root must stay recoverable by the same
shares. So each share set also records a P-256 public key derived from RK (HKDF-SHA256,
RFC 5869, info ``custody/rk-p256/v1``, reduced to a scalar). A rotation seals the new root
to it *inside the token* (``Hsm.seal_to_public``): an ephemeral P-256 key pair in the token,
CKM_ECDH1_DERIVE into a non-extractable session AES key, RFC 5649 wrap, in-token round trip.
Only the ephemeral public point and the wrapped root reach the host, and neither opens
without RK. Recovery rebuilds RK, derives the private half, computes the same ECDH secret
and unwraps the root straight into the token (``Hsm.import_wrapped``).

Blob formats (docs/formats.md): ``CSB2`` + canonical JSON ``{"v", "curve": "p256", "epk",
"rk", "wrapped"}``; the older ``CSB1`` (X25519, the one-time key sealed in software) is
still opened for recovery, never made.
"""

from __future__ import annotations

import hashlib
import json

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from custody.canonical import canonical_bytes
from custody.errors import CeremonyError, IntegrityError
from custody.hsm import Hsm, decode_wrapped

SEALED_MAGIC = b"CSB2"
LEGACY_MAGIC = b"CSB1"
P256_POINT_LEN = 65  # X9.62 uncompressed
_INFO_P256 = b"custody/rk-p256/v1"
_INFO_KEY = b"custody/rk-x25519/v1"  # CSB1 only
_INFO_SEAL = b"custody/root-blob-seal/v1"  # CSB1 only
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _hkdf(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


def rk_private(rk: bytes) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key derived from RK: 48 HKDF bytes reduced to [1, n-1] (the
    bias is below 2^-128, FIPS 186-5 A.2.1)."""
    d = int.from_bytes(_hkdf(rk, _INFO_P256, 48), "big") % (_P256_N - 1) + 1
    return ec.derive_private_key(d, ec.SECP256R1())


def rk_public(rk: bytes) -> bytes:
    """The P-256 public key derived from RK (X9.62 uncompressed; recorded with the share set)."""
    return (
        rk_private(rk)
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )


def can_seal(rk_pub: bytes) -> bool:
    """Whether a share set's recorded public key is one the token can seal to (P-256)."""
    return len(rk_pub) == P256_POINT_LEN and rk_pub[:1] == b"\x04"


def require_sealable(rk_pub: bytes) -> None:
    """Raises CeremonyError unless the token can seal to *rk_pub* (see :func:`can_seal`)."""
    if not can_seal(rk_pub):
        raise CeremonyError(
            "The share set's recovery public key is not a P-256 key",
            "It predates in-token sealing; run 'custody ceremony reshare' first, then rotate.",
        )


def seal_root(hsm: Hsm, label: str, version: int, rk_pub: bytes) -> tuple[bytes, str]:
    """Seal token key *label*/v*version* to *rk_pub* inside the token; return (blob, kcv).

    The blob is parsed back and checked against what the token returned before it is
    returned (the token already did the key's own round trip).

    Raises:
        CeremonyError: *rk_pub* is not a P-256 key (a share set made before in-token sealing).
        IntegrityError: the token's answer does not survive the round trip.
    """
    require_sealable(rk_pub)
    sealed = hsm.seal_to_public(label, version, rk_pub)
    blob = SEALED_MAGIC + canonical_bytes(
        {
            "v": version,
            "curve": "p256",
            "epk": sealed.ephemeral_public.hex(),
            "rk": hashlib.sha256(rk_pub).hexdigest(),
            "wrapped": sealed.wrapped.hex(),
        }
    )
    doc = _parse(blob, version)
    if (bytes.fromhex(doc["epk"]), bytes.fromhex(doc["wrapped"])) != (
        sealed.ephemeral_public,
        sealed.wrapped,
    ):
        raise IntegrityError(f"The blob of {label}/v{version} does not parse back", "A bug.")
    return blob, sealed.kcv


def sealed_to(blob: bytes) -> str | None:
    """SHA-256 (hex) of the public key a CSB2 blob is sealed to; None for other blobs."""
    if not blob.startswith(SEALED_MAGIC):
        return None
    try:
        return str(json.loads(blob[len(SEALED_MAGIC) :])["rk"])
    except (ValueError, KeyError, TypeError):
        return None


def wrap_format(blob: bytes) -> str:
    """The key-wrap format (``rfc5649`` or ``rfc3394``) a token needs to import the root of
    *blob*: the blob's own, or for a sealed blob that of the wrapped root inside it."""
    inner = blob
    if is_sealed(blob):
        try:
            inner = bytes.fromhex(str(json.loads(blob[len(SEALED_MAGIC) :])["wrapped"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError("A root-key blob is damaged", "Use the offline copy.") from exc
    return decode_wrapped(inner)[0]


def is_sealed(blob: bytes) -> bool:
    return blob.startswith((SEALED_MAGIC, LEGACY_MAGIC))


def _parse(blob: bytes, root_version: int) -> dict[str, str]:
    doc = json.loads(blob[len(SEALED_MAGIC) :])
    if doc.get("v") != root_version or doc.get("curve") != "p256":
        raise ValueError("wrong root version or curve")
    if canonical_bytes(doc) != blob[len(SEALED_MAGIC) :]:
        raise ValueError("not canonical")
    return {k: str(doc[k]) for k in ("epk", "rk", "wrapped")}


def open_blob(blob: bytes, rk: bytes, *, root_version: int) -> tuple[bytes, bytes]:
    """Return (wrapping key, RFC 5649 blob) to hand to ``Hsm.import_wrapped``.

    The caller holds RK (recover, drill), so the wrapping key it gets here tells it nothing
    RK does not; the root itself is unwrapped only inside a token.

    Raises:
        IntegrityError: the sealed blob does not open under this RK.
    """
    if not is_sealed(blob):
        return rk, blob
    try:
        if blob.startswith(SEALED_MAGIC):
            doc = _parse(blob, root_version)
            priv = rk_private(rk)
            mine = priv.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            if doc["rk"] != hashlib.sha256(mine).hexdigest():
                raise ValueError("sealed to another recovery key")
            eph = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), bytes.fromhex(doc["epk"])
            )
            # CKM_ECDH1_DERIVE with CKD_NULL: the key is the shared x coordinate (32 bytes)
            return priv.exchange(ec.ECDH(), eph), bytes.fromhex(doc["wrapped"])
        return _open_legacy(blob, rk, root_version)
    except Exception as exc:  # any failure here means: not openable with this RK
        raise IntegrityError(
            f"The blob of root/v{root_version} does not open with this recovery key",
            "The shares belong to another epoch or the blob was altered.",
        ) from exc


def _open_legacy(blob: bytes, rk: bytes, root_version: int) -> tuple[bytes, bytes]:
    """CSB1: the one-time key E sealed in software to RK's X25519 key (made by earlier versions)."""
    doc = json.loads(blob[len(LEGACY_MAGIC) :])
    eph_pub = bytes.fromhex(doc["epk"])
    priv = X25519PrivateKey.from_private_bytes(_hkdf(rk, _INFO_KEY))
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

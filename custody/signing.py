"""In-process Ed25519 identities of participants (custodians, super-admins, auditors).

A participant's public identity is a small JSON file; the private key is an encrypted
PKCS#8 PEM under their passphrase. Fingerprints are the first 16 bytes of
SHA-256(raw public key), shown as hex in groups of four.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from custody.errors import ConfigError, IntegrityError


def fingerprint(public_raw: bytes) -> str:
    """Hex fingerprint of a raw public key (32 hex chars)."""
    return hashlib.sha256(public_raw).hexdigest()[:32]


def short_fingerprint(public_raw: bytes) -> str:
    """A person-comparable form: 4 groups of 4 hex digits."""
    f = fingerprint(public_raw)[:16]
    return " ".join(f[i : i + 4] for i in range(0, 16, 4))


def public_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify_ed25519(public: bytes, signature: bytes, data: bytes) -> None:
    """Verify an Ed25519 signature. Returns None; raises IntegrityError when bad."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except (InvalidSignature, ValueError) as exc:
        raise IntegrityError("Bad signature", "The data or the signature was altered.") from exc


def private_to_pem(key: Ed25519PrivateKey, passphrase: bytes) -> bytes:
    """Encrypted PKCS#8 PEM (best available encryption of `cryptography`)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def private_from_pem(pem: bytes, passphrase: bytes) -> Ed25519PrivateKey:
    """Load an encrypted PKCS#8 PEM. Raises ConfigError on a wrong passphrase."""
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            "Cannot open the signing key", "The passphrase is wrong or the key file is damaged."
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            "The signing key is not Ed25519", "Create it with 'custody participant new'."
        )
    return key

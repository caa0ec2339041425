"""At-rest sealing of a share file: under a passphrase, or to the custodian's own token.

Passphrase mode: Argon2id (RFC 9106) derives a 256-bit key from the passphrase and a random
salt; AES-256-GCM encrypts the share with the sealed file's header as AAD. The header
holds the KDF parameters, the nonce and the digest of the share's envelope (if any), so
none of them can be changed without the tag failing.

Token mode: an ephemeral P-256 key agrees with the custodian's token key (ECDH), HKDF-SHA256
turns the shared secret into the AES-256-GCM key. Unsealing asks the token for the same
shared secret through the :class:`EcdhPort` (``Hsm.ecdh_derive``); the private key never
leaves the token.

Recipient mode (sealed at issue): an ephemeral X25519 key agrees with the custodian's
enrolled encryption key (:mod:`ceremonies.participants`: ``NAME.enc.pem``, endorsed by their
signing key), HKDF-SHA256 gives the AES-256-GCM key. The coordinator writes only this
ciphertext; the custodian opens it on their own machine (``custody share open``).

A wrong passphrase or a damaged file gives :class:`SealError`; decryption never returns
unauthenticated bytes. Format: ``docs/formats.md`` "Sealed share".
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from custody.canonical import canonical_bytes, load_json
from custody.errors import ShareError
from custody.passphrase import check_strength

SEALED_TYPE = "custody-sealed-share"
TOKEN_INFO = b"custody/sealed-share/token/v1"
RECIPIENT_INFO = b"custody/sealed-share/x25519/v1"
MODES = ("passphrase", "token", "x25519")
MAX_MEMORY_KIB = 1 << 20  # refuse to spend more than 1 GiB on a (possibly forged) header


class SealError(ShareError):
    """A sealed share cannot be opened: wrong passphrase/token, or the file was altered."""


class EcdhPort(Protocol):
    """The part of :class:`custody.hsm.Hsm` that unsealing needs."""

    def ecdh_derive(self, label: str, peer_public: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Argon2Params:
    """Argon2id cost. Default: RFC 9106 second recommended option (64 MiB, t=3, p=4)."""

    memory_kib: int = 65536
    iterations: int = 3
    lanes: int = 4

    def __post_init__(self) -> None:
        if not (
            1 <= self.lanes <= 64
            and 1 <= self.iterations <= 64
            and 8 * self.lanes <= self.memory_kib <= MAX_MEMORY_KIB
        ):
            raise ValueError("Argon2id parameters out of range")


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    if not isinstance(s, str):
        raise TypeError("not a string")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _argon(passphrase: bytes, salt: bytes, p: Argon2Params) -> bytes:
    return Argon2id(
        salt=salt, length=32, iterations=p.iterations, lanes=p.lanes, memory_cost=p.memory_kib
    ).derive(passphrase)


def _pack(header: dict[str, Any], nonce: bytes, key: bytes, share: str) -> bytes:
    ct = AESGCM(key).encrypt(nonce, share.encode(), canonical_bytes(header))
    return canonical_bytes({"header": header, "ciphertext": _b64(ct)})


def _envelope_digest(envelope: bytes | None) -> str:
    return hashlib.sha256(envelope).hexdigest() if envelope is not None else ""


def seal_with_passphrase(
    share: str,
    passphrase: bytes,
    *,
    envelope: bytes | None = None,
    params: Argon2Params = Argon2Params(),
    rng: Any = os.urandom,
) -> bytes:
    """Seal a share under a passphrase.

    Args:
        share: the mnemonic text.
        passphrase: the custodian's passphrase (non-empty).
        envelope: the share's envelope bytes; its SHA-256 is bound into the AAD.
        params: Argon2id cost.
        rng: random bytes source (salt, nonce).

    Returns:
        The sealed file bytes (canonical JSON).

    Raises:
        ValueError: empty passphrase.
        WeakPassphrase: zxcvbn estimates fewer than 10^12 guesses
            (:func:`custody.passphrase.check_strength`); nothing is sealed.
    """
    if not passphrase:
        raise ValueError("empty passphrase")
    check_strength(
        passphrase.decode("utf-8", "replace"),
        what="the share passphrase",
        user_inputs=("share", "custodian"),
    )
    salt, nonce = rng(16), rng(12)
    header = {
        "type": SEALED_TYPE,
        "version": 1,
        "mode": "passphrase",
        "kdf": {
            "alg": "argon2id",
            "memory_kib": params.memory_kib,
            "iterations": params.iterations,
            "lanes": params.lanes,
            "salt": salt.hex(),
        },
        "aead": "aes-256-gcm",
        "nonce": nonce.hex(),
        "envelope_sha256": _envelope_digest(envelope),
    }
    return _pack(header, nonce, _argon(passphrase, salt, params), share)


def seal_to_token(
    share: str,
    recipient_public: bytes,
    *,
    key_label: str,
    envelope: bytes | None = None,
    rng: Any = os.urandom,
) -> bytes:
    """Seal a share to a P-256 public key whose private half lives on a PKCS#11 token.

    Args:
        share: the mnemonic text.
        recipient_public: X9.62 uncompressed point (``Hsm.ensure_ecdh_key``).
        key_label: the token key label, recorded so unsealing knows which key to use.
        envelope: the share's envelope bytes, bound into the AAD.
        rng: random bytes source (nonce).

    Returns:
        The sealed file bytes.

    Raises:
        ValueError: the public key is not a valid P-256 point.
    """
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), recipient_public)
    eph = ec.generate_private_key(ec.SECP256R1())
    eph_pub = eph.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    shared = eph.exchange(ec.ECDH(), peer)
    nonce = rng(12)
    header = {
        "type": SEALED_TYPE,
        "version": 1,
        "mode": "token",
        "key_label": key_label,
        "recipient": recipient_public.hex(),
        "ephemeral": eph_pub.hex(),
        "kdf": {"alg": "hkdf-sha256"},
        "aead": "aes-256-gcm",
        "nonce": nonce.hex(),
        "envelope_sha256": _envelope_digest(envelope),
    }
    return _pack(header, nonce, _token_key(shared, eph_pub, recipient_public), share)


def _token_key(shared: bytes, eph_pub: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=TOKEN_INFO + eph_pub + recipient
    ).derive(shared)


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedShare:
    """A parsed sealed file (nothing secret until opened)."""

    header: dict[str, Any]
    ciphertext: bytes

    @property
    def mode(self) -> str:
        return str(self.header["mode"])


def _damaged(why: str) -> SealError:
    return SealError(
        f"The sealed share is damaged: {why}", "Use an intact copy of the sealed file."
    )


def load_sealed(raw: bytes | str) -> SealedShare:
    """Parse a sealed share file.

    Raises:
        SealError: not a sealed share, or malformed.
    """
    try:
        doc = load_json(raw)
        header, ct = doc["header"], _unb64(doc["ciphertext"])
        if (
            not isinstance(header, dict)
            or header.get("type") != SEALED_TYPE
            or header.get("version") != 1
            or header.get("mode") not in MODES
        ):
            raise _damaged("unknown type, version or mode")
        bytes.fromhex(header["nonce"])
    except SealError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise _damaged(type(exc).__name__) from None
    return SealedShare(header=header, ciphertext=ct)


def _open(sealed: SealedShare, key: bytes, envelope: bytes | None, wrong: SealError) -> str:
    h = sealed.header
    if envelope is not None and h.get("envelope_sha256") != _envelope_digest(envelope):
        raise SealError(
            "The sealed share belongs to a different envelope",
            "Give the envelope that was sealed with this share.",
        )
    try:
        pt = AESGCM(key).decrypt(bytes.fromhex(h["nonce"]), sealed.ciphertext, canonical_bytes(h))
        return pt.decode("utf-8")
    except (InvalidTag, ValueError, TypeError) as exc:
        raise wrong from exc


def unseal_with_passphrase(
    raw: bytes | str, passphrase: bytes, *, envelope: bytes | None = None
) -> str:
    """Open a passphrase-sealed share.

    Args:
        raw: the sealed file.
        passphrase: the passphrase.
        envelope: when given, must be the envelope bound at sealing time.

    Returns:
        The mnemonic text.

    Raises:
        SealError: wrong passphrase, altered file, wrong envelope, or a token-sealed file.
    """
    s = load_sealed(raw)
    if s.mode != "passphrase":
        raise SealError(
            "This share is sealed to a token, not a passphrase",
            "Unseal it with --token and the custodian's token PIN.",
        )
    try:
        k = s.header["kdf"]
        if k["alg"] != "argon2id":
            raise ValueError("kdf")
        for name in ("memory_kib", "iterations", "lanes"):
            if type(k[name]) is not int:
                raise TypeError(name)
        params = Argon2Params(
            memory_kib=k["memory_kib"], iterations=k["iterations"], lanes=k["lanes"]
        )
        salt = bytes.fromhex(k["salt"])
        if not 8 <= len(salt) <= 64:
            raise ValueError("salt")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _damaged("bad key-derivation parameters") from exc
    key = _argon(passphrase, salt, params)
    return _open(
        s,
        key,
        envelope,
        SealError(
            "Wrong passphrase, or the sealed share was altered",
            "Try the passphrase again; if it is right, the file is damaged: use another copy.",
        ),
    )


def unseal_with_token(raw: bytes | str, hsm: EcdhPort, *, envelope: bytes | None = None) -> str:
    """Open a token-sealed share through the token's ECDH (``Hsm.ecdh_derive``).

    Raises:
        SealError: altered file, wrong token/key, wrong envelope, or a passphrase-sealed file.
        HsmError: the token failed (from the adapter).
    """
    s = load_sealed(raw)
    if s.mode != "token":
        raise SealError(
            "This share is sealed under a passphrase, not a token",
            "Unseal it with a passphrase file or the prompt.",
        )
    try:
        h = s.header
        eph, rcpt, label = (
            bytes.fromhex(h["ephemeral"]),
            bytes.fromhex(h["recipient"]),
            h["key_label"],
        )
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), eph)
        if not isinstance(label, str):
            raise TypeError("label")
    except (ValueError, KeyError, TypeError) as exc:
        raise _damaged("bad key-agreement fields") from exc
    shared = hsm.ecdh_derive(label, eph)
    return _open(
        s,
        _token_key(shared, eph, rcpt),
        envelope,
        SealError(
            "The sealed share cannot be opened with this token",
            "It was sealed to another token key, or the file was altered.",
        ),
    )


def _x_raw(k: X25519PublicKey) -> bytes:
    return k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _recipient_key(shared: bytes, eph_pub: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=RECIPIENT_INFO + eph_pub + recipient
    ).derive(shared)


def seal_to_recipient(
    share: str,
    recipient_public: bytes,
    *,
    custodian: str,
    ceremony_id: str,
    envelope: bytes | None = None,
    rng: Any = os.urandom,
) -> bytes:
    """Seal a share to a custodian's X25519 encryption key (sealed at issue).

    Args:
        share: the mnemonic text.
        recipient_public: the custodian's raw 32-byte X25519 public key, endorsed by their
            enrolled signing key (checked by the caller).
        custodian: the custodian's roster name, bound into the AAD.
        ceremony_id: the issuing ceremony, bound into the AAD.
        envelope: the share's envelope bytes, bound into the AAD.
        rng: random bytes source (nonce).

    Raises:
        ValueError: the public key is not 32 bytes.
    """
    peer = X25519PublicKey.from_public_bytes(recipient_public)
    eph = X25519PrivateKey.generate()
    eph_pub = _x_raw(eph.public_key())
    shared = eph.exchange(peer)
    nonce = rng(12)
    header = {
        "type": SEALED_TYPE,
        "version": 1,
        "mode": "x25519",
        "custodian": custodian,
        "ceremony_id": ceremony_id,
        "recipient": recipient_public.hex(),
        "ephemeral": eph_pub.hex(),
        "kdf": {"alg": "hkdf-sha256"},
        "aead": "aes-256-gcm",
        "nonce": nonce.hex(),
        "envelope_sha256": _envelope_digest(envelope),
    }
    return _pack(header, nonce, _recipient_key(shared, eph_pub, recipient_public), share)


def unseal_with_recipient_key(
    raw: bytes | str, private: X25519PrivateKey, *, envelope: bytes | None = None
) -> str:
    """Open a share sealed at issue with the custodian's X25519 private key.

    Raises:
        SealError: another recipient's file, an altered file, a wrong envelope, or a file
            sealed another way.
    """
    s = load_sealed(raw)
    if s.mode != "x25519":
        raise SealError(
            f"This share is sealed with mode {s.mode!r}, not to an encryption key",
            "Open it with 'custody share unseal' (passphrase or token).",
        )
    mine = _x_raw(private.public_key())
    try:
        h = s.header
        eph, rcpt = bytes.fromhex(h["ephemeral"]), bytes.fromhex(h["recipient"])
        peer = X25519PublicKey.from_public_bytes(eph)
    except (ValueError, KeyError, TypeError) as exc:
        raise _damaged("bad key-agreement fields") from exc
    if rcpt != mine:
        raise SealError(
            "This share is sealed to another custodian's encryption key",
            "Open it with the NAME.enc.pem of the custodian it was issued to.",
        )
    try:
        shared = private.exchange(peer)
    except ValueError as exc:  # a low-order point gives the all-zero secret
        raise _damaged("bad ephemeral key") from exc
    return _open(
        s,
        _recipient_key(shared, eph, rcpt),
        envelope,
        SealError(
            "The sealed share was altered",
            "Ask the coordinator for the ciphertext again; it was damaged on the way.",
        ),
    )

"""Bulk transfer of secrets between homes: signed, and encrypted to one recipient.

An export is one JSON file (RFC 8785)::

    {"header": {...}, "ciphertext": b64url, "signature": hex}

The header names the format, the sender's public signing key (Ed25519; or ECDSA P-256 for
a key on a token without CKM_EDDSA, then with ``"sender_alg": "ecdsa-p256"``, absent for
Ed25519 so that older exports are unchanged), the recipient's X25519 key,
an ephemeral X25519 key, the nonce, the time and the count. The body (the secrets, with
their values) is AES-256-GCM under HKDF-SHA256(X25519(ephemeral, recipient)) with the header
as AAD, and the sender signs the header and the ciphertext's SHA-256. So only the recipient
opens it, a changed byte anywhere is refused, and the recipient knows who sent it: import
requires the sender's key to be pinned. The plaintext never touches a disk on either side.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from custody.audit.signers import ALGORITHMS, ED25519, verify_signature
from custody.canonical import canonical_bytes, domain_hash, load_json
from custody.errors import IntegrityError

TYPE = "custody-secret-export"
INFO = b"custody/secret-export/v1"
MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ExportItem:
    env: str
    path: str
    category: str
    owner: str
    value: str = field(repr=False)
    prefix: str | None = None


def _raw(k: X25519PublicKey) -> bytes:
    return k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key(shared: bytes, eph: bytes, rcpt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO + eph + rcpt).derive(
        shared
    )


def _signed(header: dict[str, Any], ct: bytes) -> bytes:
    return domain_hash(
        "custody/secret-export/sig/v1", canonical_bytes(header), hashlib.sha256(ct).digest()
    )


def seal_export(
    items: Sequence[ExportItem],
    recipient: bytes,
    *,
    sender_public: bytes,
    sign: Callable[[bytes], bytes],
    now: int,
    sender_alg: str = ED25519,
) -> bytes:
    """The export file for *items*, encrypted to *recipient* (raw X25519) and signed by
    the sender's key of *sender_alg*."""
    if sender_alg not in ALGORITHMS:
        raise ValueError(f"unknown signing algorithm {sender_alg[:20]!r}")
    eph = X25519PrivateKey.generate()
    eph_pub = _raw(eph.public_key())
    nonce = os.urandom(12)
    header = {
        "type": TYPE,
        "version": 1,
        "sender": sender_public.hex(),
        "recipient": recipient.hex(),
        "ephemeral": eph_pub.hex(),
        "nonce": nonce.hex(),
        "created": now,
        "count": len(items),
    }
    if sender_alg != ED25519:
        header["sender_alg"] = sender_alg
    body = canonical_bytes(
        [
            {"env": i.env, "path": i.path, "category": i.category, "owner": i.owner,
             "value": i.value, "prefix": i.prefix}
            for i in items
        ]
    )  # fmt: skip
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient))
    ct = AESGCM(_key(shared, eph_pub, recipient)).encrypt(nonce, body, canonical_bytes(header))
    sig = sign(_signed(header, ct))
    return canonical_bytes(
        {
            "header": header,
            "ciphertext": base64.urlsafe_b64encode(ct).decode().rstrip("="),
            "signature": sig.hex(),
        }
    )


def _bad(why: str) -> IntegrityError:
    return IntegrityError(
        f"The secret export is refused: {why}",
        "Ask the sender for a new export; never import one you cannot verify.",
    )


def open_export(
    raw: bytes,
    private: X25519PrivateKey,
    *,
    trusted_senders: Sequence[bytes],
    sender_algs: Mapping[bytes, str] | None = None,
) -> tuple[dict[str, Any], list[ExportItem]]:
    """Verify and decrypt an export. *sender_algs*: pinned key -> its algorithm, for the
    pinned senders whose key is not Ed25519; the export must name that very algorithm and
    its signature is checked under it alone.

    Raises:
        IntegrityError: malformed, not for this recipient, a sender that is not pinned, a
            bad signature, or an altered ciphertext.
    """
    if len(raw) > MAX_BYTES:
        raise _bad("larger than 64 MiB")
    try:
        doc = load_json(raw)
        header, sig = doc["header"], bytes.fromhex(doc["signature"])
        ct_text = doc["ciphertext"]
        ct = base64.urlsafe_b64decode(ct_text + "=" * (-len(ct_text) % 4))
        if header["type"] != TYPE or header["version"] != 1 or set(doc) != {
            "header", "ciphertext", "signature"
        }:  # fmt: skip
            raise ValueError("type")
        sender, rcpt = bytes.fromhex(header["sender"]), bytes.fromhex(header["recipient"])
        eph, nonce = bytes.fromhex(header["ephemeral"]), bytes.fromhex(header["nonce"])
        if len(nonce) != 12 or type(header["count"]) is not int:
            raise ValueError("fields")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _bad("malformed") from exc
    if rcpt != _raw(private.public_key()):
        raise _bad("it is encrypted to another recipient")
    if sender not in trusted_senders:
        raise _bad("its sender is not a pinned key (--trust)")
    alg = header.get("sender_alg", ED25519)
    if alg != (sender_algs or {}).get(sender, ED25519) or alg not in ALGORITHMS:
        raise _bad("its signing algorithm is not the pinned key's")
    if not verify_signature(alg, sender, sig, _signed(header, ct)):
        raise _bad("the signature does not verify")
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph))
        body = load_json(
            AESGCM(_key(shared, eph, rcpt)).decrypt(nonce, ct, canonical_bytes(header))
        )
        items = [
            ExportItem(
                env=str(d["env"]),
                path=str(d["path"]),
                category=str(d["category"]),
                owner=str(d["owner"]),
                value=str(d["value"]),
                prefix=None if d.get("prefix") is None else str(d["prefix"]),
            )
            for d in body
        ]
    except (InvalidTag, ValueError, KeyError, TypeError) as exc:
        raise _bad("the ciphertext was altered") from exc
    if len(items) != header["count"]:
        raise _bad("the count does not match")
    return header, items

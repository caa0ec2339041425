"""The share envelope: a dealer-signed record binding one share to its ceremony.

An envelope says which ceremony (id and policy digest) and epoch a share belongs to, its
group and member index, the custodian's key fingerprint, the key check value of the
protected secret, and a commitment ``H(domain | ceremony | epoch | index | share)``. It
never contains the share. The dealer signs the RFC 8785 canonical bytes of the payload,
prefixed by a context string; the signature is kept apart from the payload (as TUF keeps
``signed`` apart from ``signatures``). Format: ``docs/formats.md`` "Share envelope".

The dealer (the ceremony's coordinator) signs with its enrolled key: an in-process Ed25519
key, or a key on its PKCS#11 token, Ed25519 or ECDSA P-256 (raw r||s over SHA-256; see
:mod:`custody.audit.signers`). A verifier checks the signature under the algorithm of the
key it pinned (the auditor's or custodian's pin, or the roster entry of the dealer), never
one read from the envelope, which names no algorithm.

Verification returns None or raises :class:`EnvelopeError` with a machine ``reason``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from custody.audit.signers import ALGORITHMS, ED25519, public_key_ok, verify_signature
from custody.canonical import canonical_bytes, domain_hash, load_json
from custody.errors import ConfigError, ShareError
from custody.shares.slip39_parse import ParsedShare, parse_share
from custody.signing import fingerprint, public_raw, short_fingerprint

ENVELOPE_TYPE = "custody-share-envelope"
ENVELOPE_VERSION = 1
COMMITMENT_DOMAIN = "custody/share-commitment/v1"
SIGNING_CONTEXT = b"custody/share-envelope/v1\n"
_HEX = re.compile(r"^[0-9a-f]*$")


class DealerKey(Protocol):
    """A signer the dealer signs with (:class:`custody.audit.signers.Signer`): a raw
    ``public`` key of its ``alg`` and ``sign(data)``, in process or on a token."""

    @property
    def alg(self) -> str: ...

    @property
    def public(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


def dealer_public(dealer: Ed25519PrivateKey | DealerKey) -> bytes:
    """The raw public key of *dealer*: an in-process Ed25519 key, or a signer of an
    algorithm :func:`custody.audit.signers.verify_signature` checks.

    Raises:
        ValueError: the signer's algorithm is not one of those (a caller's bug).
    """
    if isinstance(dealer, Ed25519PrivateKey):
        return public_raw(dealer)
    if dealer.alg not in ALGORITHMS:
        raise ValueError(f"unsupported dealer algorithm {dealer.alg!r}")
    return bytes(dealer.public)


def dealer_sign(dealer: Ed25519PrivateKey | DealerKey, data: bytes) -> bytes:
    """*dealer*'s signature over *data* (see :func:`dealer_public`)."""
    dealer_public(dealer)  # refuses an algorithm no verifier checks
    return bytes(dealer.sign(data))


class EnvelopeError(ShareError):
    """A share does not verify against its envelope. ``reason`` is one of: ``malformed``,
    ``bad-signature``, ``wrong-ceremony``, ``wrong-epoch``, ``wrong-index``,
    ``commitment-mismatch``."""

    def __init__(self, title: str, hint: str = "", *, reason: str) -> None:
        super().__init__(title, hint)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopePayload:
    """The signed part of an envelope (all public)."""

    ceremony_id: str
    policy_digest: str
    epoch: int
    group_index: int
    member_index: int
    custodian: str
    kcv: str
    commitment: str
    version: int = ENVELOPE_VERSION

    def __post_init__(self) -> None:
        if self.version != ENVELOPE_VERSION:
            raise ValueError("unsupported envelope version")
        if not self.ceremony_id or not 0 <= self.epoch < 2**53:
            raise ValueError("ceremony id must be set and epoch in 0..2^53")
        if not (0 <= self.group_index < 16 and 0 <= self.member_index < 16):
            raise ValueError("group and member index must be 0..15")
        for name in ("policy_digest", "custodian", "kcv", "commitment"):
            if not _HEX.match(getattr(self, name)):
                raise ValueError(f"{name} must be lower-case hex")
        if len(self.commitment) != 64:
            raise ValueError("commitment must be 32 bytes")

    def to_json(self) -> dict[str, Any]:
        return {
            "type": ENVELOPE_TYPE,
            "version": self.version,
            "ceremony_id": self.ceremony_id,
            "policy_digest": self.policy_digest,
            "epoch": self.epoch,
            "group_index": self.group_index,
            "member_index": self.member_index,
            "custodian": self.custodian,
            "kcv": self.kcv,
            "commitment": self.commitment,
        }

    def signing_bytes(self) -> bytes:
        """The exact bytes the dealer signs: context string + RFC 8785 payload."""
        return SIGNING_CONTEXT + canonical_bytes(self.to_json())


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedEnvelope:
    """An envelope payload and the dealer's Ed25519 signature over its signing bytes."""

    payload: EnvelopePayload
    signer: str  # fingerprint of the dealer's public key (hex)
    signature: bytes

    def to_bytes(self) -> bytes:
        """Deterministic file/QR form (RFC 8785 JSON)."""
        return canonical_bytes(
            {
                "signed": self.payload.to_json(),
                "signatures": [{"keyid": self.signer, "sig": self.signature.hex()}],
            }
        )

    def short_fingerprint(self) -> str:
        """Four groups of hex over SHA-256 of :meth:`to_bytes`, for people to compare."""
        return short_fingerprint(self.to_bytes())


def commitment(share: ParsedShare, *, ceremony_id: str, epoch: int) -> bytes:
    """``H(domain | ceremony | epoch | index | share)`` with length-prefixed parts.

    The share part is the normalised mnemonic, which also binds the SLIP-0039 identifier
    and thresholds. Index is two bytes: group index, member index (0-based, as encoded).
    """
    return domain_hash(
        COMMITMENT_DOMAIN,
        ceremony_id.encode(),
        epoch.to_bytes(8, "big"),
        bytes([share.group_index, share.member_index]),
        share.mnemonic.encode(),
    )


def make_envelope(
    share: ParsedShare,
    *,
    ceremony_id: str,
    policy_digest: str,
    epoch: int,
    custodian: str,
    kcv: str,
    dealer: Ed25519PrivateKey | DealerKey,
) -> SignedEnvelope:
    """Build and sign the envelope of one share.

    Args:
        share: the share (see :func:`custody.shares.slip39_parse.parse_share`).
        ceremony_id: the generating ceremony's id.
        policy_digest: hex digest of the signed ceremony policy.
        epoch: 0 at generation, +1 at each reshare.
        custodian: hex fingerprint of the custodian's signing key.
        kcv: hex key check value of the protected secret (RK).
        dealer: the coordinator's signing key: in process (Ed25519), or a token-held
            signer (Ed25519 or ECDSA P-256).

    Returns:
        The signed envelope.

    Raises:
        ValueError: a field is out of range or not hex (a caller's bug).
    """
    payload = EnvelopePayload(
        ceremony_id=ceremony_id,
        policy_digest=policy_digest,
        epoch=epoch,
        group_index=share.group_index,
        member_index=share.member_index,
        custodian=custodian,
        kcv=kcv,
        commitment=commitment(share, ceremony_id=ceremony_id, epoch=epoch).hex(),
    )
    return SignedEnvelope(
        payload=payload,
        signer=fingerprint(dealer_public(dealer)),
        signature=dealer_sign(dealer, payload.signing_bytes()),
    )


def _malformed(why: str) -> EnvelopeError:
    return EnvelopeError(
        f"The envelope is malformed: {why}",
        "Use the envelope file or QR issued with this share.",
        reason="malformed",
    )


def load_envelope(raw: bytes | str) -> SignedEnvelope:
    """Parse an envelope file (JSON; see docs/formats.md).

    Raises:
        EnvelopeError: reason ``malformed``.
    """
    try:
        doc = load_json(raw)
        signed, sigs = doc["signed"], doc["signatures"]
        if not isinstance(signed, dict) or signed.get("type") != ENVELOPE_TYPE:
            raise _malformed("not a share envelope")
        if not isinstance(sigs, list) or len(sigs) != 1:
            raise _malformed("exactly one signature expected")
        fields = {
            k: signed[k]
            for k in (
                "ceremony_id",
                "policy_digest",
                "epoch",
                "group_index",
                "member_index",
                "custodian",
                "kcv",
                "commitment",
                "version",
            )
        }
        if set(signed) != set(fields) | {"type"}:
            raise _malformed("unexpected fields")
        for k in ("epoch", "group_index", "member_index", "version"):
            if type(fields[k]) is not int:
                raise _malformed(f"{k} is not an integer")
        for k in ("ceremony_id", "policy_digest", "custodian", "kcv", "commitment"):
            if not isinstance(fields[k], str):
                raise _malformed(f"{k} is not a string")
        payload = EnvelopePayload(**fields)
        sig = bytes.fromhex(sigs[0]["sig"])
        signer = sigs[0]["keyid"]
        if not isinstance(signer, str):
            raise _malformed("keyid is not a string")
    except EnvelopeError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise _malformed(type(exc).__name__) from None
    return SignedEnvelope(payload=payload, signer=signer, signature=sig)


def load_public_key(text: str) -> tuple[bytes, str]:
    """Load an Ed25519 trust key: JSON ``{"alg":"ed25519","public":"<hex>","name":...}`` or
    a bare 64-hex line.

    Returns:
        (raw 32-byte public key, name or "").

    Raises:
        ConfigError: not one of the two forms, or not an Ed25519 key.
    """
    raw, name, alg = load_trust_public(text)
    if alg != ED25519:
        raise ConfigError(
            "The public key file is not an Ed25519 public key",
            'Give a JSON {"alg":"ed25519","public":"<64 hex>"} file or one line of 64 hex digits.',
        )
    return raw, name


def load_trust_public(text: str) -> tuple[bytes, str, str]:
    """Load the dealer's (coordinator's) key a custodian pinned: JSON ``{"alg": ALG,
    "public": "<hex>", "name": ...}`` (a ``NAME.pub.json`` identity file is one), with
    ``alg`` ``ed25519`` (64 hex) or ``ecdsa-p256`` (the 130-hex uncompressed point), or a
    bare 64-hex line (always Ed25519).

    Returns:
        (raw public key, name or "", its algorithm): signatures are checked under that
        algorithm only.

    Raises:
        ConfigError: not one of these forms, or a key not of its algorithm.
    """
    s = text.strip()
    try:
        if s.startswith("{"):
            doc = load_json(s)
            alg = doc.get("alg")
            if not isinstance(alg, str) or alg not in ALGORITHMS:
                raise ValueError("alg")
            raw, name = bytes.fromhex(doc["public"]), doc.get("name", "")
            if not isinstance(name, str):
                raise TypeError("name")
        else:
            raw, name, alg = bytes.fromhex(s), "", ED25519
        if not public_key_ok(alg, raw):
            raise ValueError("key")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            "The public key file is not an Ed25519 or ECDSA P-256 public key",
            'Give the coordinator\'s NAME.pub.json, a JSON {"alg":"ed25519","public":"<64 hex>"} '
            "file or one line of 64 hex digits.",
        ) from exc
    return raw, name, alg


def public_key_json(public: bytes, name: str = "") -> str:
    """The public key file form (one JSON line)."""
    return canonical_bytes({"alg": "ed25519", "public": public.hex(), "name": name}).decode()


def verify_share(
    share: ParsedShare | str,
    envelope: SignedEnvelope,
    trusted_pubkey: bytes,
    *,
    alg: str = ED25519,
    expected_ceremony: str | None = None,
    expected_epoch: int | None = None,
) -> None:
    """Check a share against its envelope: signature, ceremony, epoch, index, commitment.

    Args:
        share: the parsed share, or its mnemonic text.
        envelope: the envelope that came with it.
        trusted_pubkey: the dealer's raw public key, pinned by the verifier.
        alg: that key's algorithm, as pinned (or as the roster records it): the signature
            is checked under it only.
        expected_ceremony: the ceremony this share must belong to (None: not checked).
        expected_epoch: the epoch it must belong to (None: not checked).

    Returns:
        None.

    Raises:
        EnvelopeError: ``bad-signature``, ``wrong-ceremony``, ``wrong-epoch``,
            ``wrong-index`` or ``commitment-mismatch``.
        ShareError: the share text itself does not parse (see parse_share).
    """
    parsed = parse_share(share) if isinstance(share, str) else share
    p = envelope.payload
    if not verify_signature(alg, trusted_pubkey, envelope.signature, p.signing_bytes()):
        raise EnvelopeError(
            "The envelope's signature does not verify with the trusted key",
            "The envelope was altered, or it was signed by another dealer.",
            reason="bad-signature",
        )
    if expected_ceremony is not None and p.ceremony_id != expected_ceremony:
        raise EnvelopeError(
            f"The share belongs to ceremony {p.ceremony_id!r}, not {expected_ceremony!r}",
            "This share is from another ceremony.",
            reason="wrong-ceremony",
        )
    if expected_epoch is not None and p.epoch != expected_epoch:
        raise EnvelopeError(
            f"The share is from epoch {p.epoch}, not {expected_epoch}",
            "It was replaced by a reshare; use the current share.",
            reason="wrong-epoch",
        )
    check_commitment(parsed, envelope)


def check_commitment(share: ParsedShare, envelope: SignedEnvelope) -> None:
    """Check only that *share* is the one the envelope commits to (no signature check).

    Raises:
        EnvelopeError: ``wrong-index`` or ``commitment-mismatch``.
    """
    parsed, p = share, envelope.payload
    if (parsed.group_index, parsed.member_index) != (p.group_index, p.member_index):
        raise EnvelopeError(
            f"The share is group {parsed.group_index + 1} member {parsed.member_index + 1}, "
            f"but the envelope is for group {p.group_index + 1} member {p.member_index + 1}",
            "The share and envelope do not belong together.",
            reason="wrong-index",
        )
    want = commitment(parsed, ceremony_id=p.ceremony_id, epoch=p.epoch)
    if want.hex() != p.commitment:
        raise EnvelopeError(
            "The share does not match the commitment in its envelope",
            "The share was altered or substituted; do not use it.",
            reason="commitment-mismatch",
        )

"""Remote hand-in of a share: a signed X25519 offer, a sealed blob, a short auth string.

1. The coordinator makes an *offer*: a fresh X25519 public key, the share set it collects
   (the generating ceremony's id and the epoch, which the custodian's envelope names), the
   *session* (the id of the ceremony that is running now and will open the blob) and an
   expiry, all signed with the coordinator's enrolled key (Ed25519, in process or on a
   token, or ECDSA P-256 on a token without EdDSA). It travels as text
   (``custody-offer:...``) or QR.
2. The custodian checks the signature against the coordinator key they pinned, under
   that pin's algorithm only (the offer names none), the
   expiry (``now`` is a parameter) and, when they have their envelope, that the offer is
   for the envelope's ceremony and epoch. Then :func:`seal_to_offer` makes a fresh X25519
   key, derives an AES-256-GCM key with HKDF-SHA256 bound to the ceremony id, epoch,
   session, both public keys and the offer digest, and seals the share
   (``custody-blob:...``).
3. Both sides show the same short authentication string (SAS): SLIP-0039 words derived
   from both public keys. Comparing it by voice defeats a swapped offer or blob.
4. The coordinator opens the blob with the offer's private half (:func:`open_blob`), which
   rejects blobs for another offer, ceremony, epoch or session, expired offers and any
   alteration. A ceremony opens blobs only with ``expected_session`` set to its own id, so
   a blob sealed for ceremony A is refused by ceremony B (``wrong-session``) even if B
   somehow held A's offer key.

The session is never implied: :func:`make_offer` requires ``session`` and
:func:`open_blob` requires ``expected_session``; :func:`seal_to_offer` requires the
custodian's ``expected_session`` argument (``None`` only when no session was given to
them, in which case the caller shows the offer's signed session).

Format: ``docs/formats.md`` "Transport offer and blob".
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from shamir_mnemonic.wordlist import WORDLIST

from custody.audit.signers import ED25519, verify_signature
from custody.canonical import canonical_bytes, domain_hash, load_json
from custody.errors import ShareError
from custody.shares.envelope import DealerKey, dealer_public, dealer_sign
from custody.signing import fingerprint

OFFER_PREFIX = "custody-offer:"
COMPACT_MARK = "8"  # the first digit of a compact offer (format 1 of the digit form)
BLOB_PREFIX = "custody-blob:"
FORMAT_VERSION = 2
OFFER_CONTEXT = b"custody/transport-offer/v2\n"
HKDF_INFO = b"custody/transport/v2"
SAS_DOMAIN = "custody/transport-sas/v1"
SAS_WORDS = 4
Rng = Callable[[int], bytes]


class TransportError(ShareError):
    """An offer or blob is refused. ``reason``: ``malformed``, ``bad-signature``,
    ``expired``, ``wrong-ceremony``, ``wrong-epoch``, ``wrong-session``, ``wrong-offer``,
    ``tampered``."""

    def __init__(self, title: str, hint: str = "", *, reason: str) -> None:
        super().__init__(title, hint)
        self.reason = reason


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unarmor(text: str, prefix: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise TransportError(
            "The text is damaged", "Copy it again, completely.", reason="malformed"
        )
    s = "".join(text.split())
    if not s.startswith(prefix):
        raise TransportError(
            f"Not a {prefix.rstrip(':')} text",
            f"Paste the whole text, starting with '{prefix}'.",
            reason="malformed",
        )
    try:
        body = s[len(prefix) :]
        doc = load_json(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if not isinstance(doc, dict):
            raise TypeError("doc")
        return doc
    except (ValueError, TypeError, RecursionError) as exc:
        raise TransportError(
            "The text is damaged", "Copy it again, completely.", reason="malformed"
        ) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """A coordinator's signed offer (public).

    ``ceremony_id`` and ``epoch`` name the share set being collected (what each
    custodian's envelope names); ``session`` is the ceremony that runs now and opens the
    hand-ins (the same id as ``ceremony_id`` in a generate verification round).
    """

    ceremony_id: str
    epoch: int
    session: str
    public: bytes
    expires: int
    coordinator: str
    signature: bytes = b""
    # read from the compact form, which leaves out the fingerprint: only then does
    # verify_offer restore it from the pinned key (a text offer must carry its own)
    compact: bool = field(default=False, compare=False, repr=False)

    def payload(self) -> dict[str, Any]:
        return {
            "type": "custody-transport-offer",
            "version": FORMAT_VERSION,
            "ceremony_id": self.ceremony_id,
            "epoch": self.epoch,
            "session": self.session,
            "x25519": self.public.hex(),
            "expires": self.expires,
            "coordinator": self.coordinator,
        }

    def signing_bytes(self) -> bytes:
        return OFFER_CONTEXT + canonical_bytes(self.payload())

    def digest(self) -> bytes:
        return hashlib.sha256(self.signing_bytes()).digest()

    def to_text(self) -> str:
        """Armored text (``custody-offer:...``): what is copied and pasted."""
        return OFFER_PREFIX + _b64(
            canonical_bytes({"signed": self.payload(), "sig": self.signature.hex()})
        )

    def to_compact(self) -> str:
        """The same signed offer as a string of decimal digits, for a QR in numeric mode
        (3.3 bits a digit, as dense as binary, and it survives any scanner and any
        copy): ``8`` and then the packed fields (:func:`pack_compact`) as one zero-padded
        number. It leaves out the coordinator's fingerprint, which the custodian's pinned
        coordinator key gives back (:func:`verify_offer` restores it before it checks the
        signature), so a 3-of-5 hand-in offer is 322 digits: a version 6 QR at level L,
        41 modules, which fits 80x24 in half blocks.

        Raises:
            ValueError: a field the compact form cannot carry (ids that are not 32 hex
                digits, an epoch over 127, an expiry after 2106): use :meth:`to_text`.
        """
        raw = pack_compact(self)
        return COMPACT_MARK + str(int.from_bytes(raw, "big")).zfill(_digits(len(raw)))


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferKey:
    """The coordinator's private half of an offer, kept in a 0600 file until expiry."""

    offer: Offer
    private: X25519PrivateKey = field(repr=False)

    def to_json(self) -> str:
        raw = self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return json.dumps(
            {
                "type": "custody-offer-key",
                "x25519_private": raw.hex(),
                "offer": self.offer.to_text(),
            }
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HandIn:
    """An opened blob: the share (secret), its envelope bytes if sent, and the SAS."""

    share: str = field(repr=False)
    envelope: bytes | None
    sas: str


def _x_raw(k: X25519PublicKey) -> bytes:
    return k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sas(offer_public: bytes, sender_public: bytes) -> str:
    """Short authentication string: SLIP-0039 words from both public keys (40 bits)."""
    n = int.from_bytes(domain_hash(SAS_DOMAIN, offer_public, sender_public)[:8], "big")
    return " ".join(WORDLIST[(n >> (10 * i)) & 1023] for i in range(SAS_WORDS))


def make_offer(
    *,
    ceremony_id: str,
    epoch: int,
    session: str,
    coordinator: Ed25519PrivateKey | DealerKey,
    now: int,
    ttl: int = 900,
    rng: Rng = os.urandom,
) -> OfferKey:
    """Create and sign an offer valid from *now* for *ttl* seconds.

    Args:
        ceremony_id, epoch: the share set collected (its generating ceremony and epoch).
        coordinator: the coordinator's signing key: in process (Ed25519), or a token-held
            signer (Ed25519 or ECDSA P-256).
        now: current Unix time in seconds.
        ttl: validity in seconds.
        session: the id of the ceremony that will open the hand-ins (required: there is
            no default, so an offer never silently names the share set's ceremony as its
            session; a generate verification round passes its own id for both).
        rng: random bytes (the X25519 private half).

    Returns:
        The offer with its private half.

    Raises:
        ValueError: empty ceremony id or session, negative epoch or non-positive ttl.
    """
    if not ceremony_id or not session or epoch < 0 or ttl <= 0:
        raise ValueError("ceremony id, session, epoch >= 0 and ttl > 0 are required")
    priv = X25519PrivateKey.from_private_bytes(rng(32))
    unsigned = Offer(
        ceremony_id=ceremony_id,
        epoch=epoch,
        session=session,
        public=_x_raw(priv.public_key()),
        expires=now + ttl,
        coordinator=fingerprint(dealer_public(coordinator)),
    )
    sig = dealer_sign(coordinator, unsigned.signing_bytes())
    return OfferKey(offer=Offer(**{**_fields(unsigned), "signature": sig}), private=priv)


def _fields(o: Offer) -> dict[str, Any]:
    return {
        k: getattr(o, k)
        for k in (
            "ceremony_id",
            "epoch",
            "session",
            "public",
            "expires",
            "coordinator",
            "signature",
        )
    }


def _digits(n: int) -> int:
    """Decimal digits that hold any *n*-byte number (strictly increasing in *n*)."""
    return len(str(256**n - 1))


_ID_HEX = set("0123456789abcdef")


def _id_bytes(text: str) -> bytes:
    if len(text) != 32 or not set(text) <= _ID_HEX:
        raise ValueError("the compact form carries ids of 32 lowercase hex digits")
    return bytes.fromhex(text)


def pack_compact(o: Offer) -> bytes:
    """The compact offer's bytes: ``(epoch << 1) | same_session`` (1 byte), the ceremony
    id (16), the session unless it is the ceremony id (16), the expiry (4, big-endian),
    the X25519 key (32) and the signature (64).

    Raises:
        ValueError: see :meth:`Offer.to_compact`.
    """
    if not 0 <= o.epoch <= 127:
        raise ValueError("the compact form carries epochs 0..127")
    if not 0 <= o.expires < 2**32:
        raise ValueError("the compact form carries expiries before 2106")
    if len(o.public) != 32 or len(o.signature) != 64:
        raise ValueError("key or signature length")
    same = o.session == o.ceremony_id
    return b"".join(
        (
            bytes([(o.epoch << 1) | int(same)]),
            _id_bytes(o.ceremony_id),
            b"" if same else _id_bytes(o.session),
            o.expires.to_bytes(4, "big"),
            o.public,
            o.signature,
        )
    )


def _parse_compact(s: str) -> Offer:
    """Raises ValueError when *s* (digits after the mark) is not a compact offer."""
    n = next((k for k in (133, 117) if _digits(k) == len(s)), None)
    if n is None:
        raise ValueError("length")
    raw = int(s).to_bytes(n, "big")  # OverflowError: more than n bytes (the caller catches it)
    same = bool(raw[0] & 1)
    if same != (n == 117):
        raise ValueError("flag")
    cid = raw[1:17].hex()
    rest = raw[17:] if same else raw[33:]
    return Offer(
        ceremony_id=cid,
        epoch=raw[0] >> 1,
        session=cid if same else raw[17:33].hex(),
        public=rest[4:36],
        expires=int.from_bytes(rest[:4], "big"),
        coordinator="",  # restored from the pinned key by verify_offer
        signature=rest[36:100],
        compact=True,
    )


def parse_offer(text: str) -> Offer:
    """Parse an offer: the armored text (``custody-offer:...``) or the compact digits
    (:meth:`Offer.to_compact`, the QR's content). No signature check: see
    :func:`verify_offer`. A compact offer's ``coordinator`` is empty until
    :func:`verify_offer` restores it from the pinned key (its :meth:`Offer.digest` is the
    signed one only then).

    Raises:
        TransportError: ``malformed``.
    """
    if isinstance(text, str):
        digits = "".join(text.split())
        if digits.isascii() and digits.isdigit() and digits.startswith(COMPACT_MARK):
            try:
                return _parse_compact(digits[1:])
            except (ValueError, OverflowError) as exc:
                raise TransportError(
                    "The offer is damaged",
                    "Scan or copy the offer again, completely.",
                    reason="malformed",
                ) from exc
    doc = _unarmor(text, OFFER_PREFIX)
    try:
        p = doc["signed"]
        if p["type"] != "custody-transport-offer" or p["version"] != FORMAT_VERSION or len(p) != 8:
            raise ValueError("type")
        if type(p["epoch"]) is not int or type(p["expires"]) is not int:
            raise TypeError("int")
        if not all(isinstance(p[k], str) for k in ("ceremony_id", "session", "coordinator")):
            raise TypeError("str")
        pub = bytes.fromhex(p["x25519"])
        if len(pub) != 32:
            raise ValueError("key")
        return Offer(
            ceremony_id=p["ceremony_id"],
            epoch=p["epoch"],
            session=p["session"],
            public=pub,
            expires=p["expires"],
            coordinator=p["coordinator"],
            signature=bytes.fromhex(doc["sig"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TransportError(
            "The offer is damaged", "Ask the coordinator for the offer again.", reason="malformed"
        ) from exc


def verify_offer(
    offer: Offer,
    trusted_coordinator: bytes,
    *,
    now: int,
    alg: str = ED25519,
    expected_ceremony: str | None = None,
    expected_epoch: int | None = None,
    expected_session: str | None = None,
) -> Offer:
    """Check an offer's signature (under *alg*, the pinned coordinator key's algorithm
    only), expiry, ceremony, epoch and session.

    Returns:
        The offer, with the coordinator's fingerprint restored from *trusted_coordinator*
        when it came in the compact form (which leaves it out): the signature is checked
        over exactly what the coordinator signed, fingerprint included.

    Raises:
        TransportError: ``bad-signature``, ``expired``, ``wrong-ceremony``, ``wrong-epoch``,
            ``wrong-session``.
    """
    if offer.compact and not offer.coordinator:
        offer = Offer(**{**_fields(offer), "coordinator": fingerprint(trusted_coordinator)})
    if not verify_signature(alg, trusted_coordinator, offer.signature, offer.signing_bytes()):
        raise TransportError(
            "The offer is not signed by the trusted coordinator key",
            "Do not send your share; call the coordinator.",
            reason="bad-signature",
        )
    if now > offer.expires:
        raise TransportError(
            "The offer has expired", "Ask the coordinator for a fresh offer.", reason="expired"
        )
    _check_binding(offer.ceremony_id, offer.epoch, expected_ceremony, expected_epoch)
    _check_session(offer.session, expected_session)
    return offer


def _check_session(session: str, want: str | None) -> None:
    if want is not None and session != want:
        raise TransportError(
            f"This hand-in is for another ceremony (session {session!r}, not {want!r})",
            "It was sealed for another running ceremony; "
            "refuse it and ask the custodian to seal to this ceremony's "
            "offer.",
            reason="wrong-session",
        )


def _check_binding(cer: str, epoch: int, want_cer: str | None, want_epoch: int | None) -> None:
    if want_cer is not None and cer != want_cer:
        raise TransportError(
            f"This is for ceremony {cer!r}, not {want_cer!r}",
            "It belongs to another ceremony; refuse it.",
            reason="wrong-ceremony",
        )
    if want_epoch is not None and epoch != want_epoch:
        raise TransportError(
            f"This is for epoch {epoch}, not {want_epoch}",
            "It belongs to another epoch; refuse it.",
            reason="wrong-epoch",
        )


def _key(shared: bytes, offer: Offer, header: dict[str, Any]) -> bytes:
    if shared == bytes(32):
        raise ValueError("low-order point")
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=offer.digest(),
        info=HKDF_INFO + canonical_bytes(header),
    ).derive(shared)


def seal_to_offer(
    offer: Offer | str,
    share: str,
    *,
    trusted_coordinator: bytes,
    now: int,
    expected_session: str | None,
    trusted_alg: str = ED25519,
    envelope: bytes | None = None,
    expected_ceremony: str | None = None,
    expected_epoch: int | None = None,
    rng: Rng = os.urandom,
) -> tuple[str, str]:
    """Seal a share to a verified offer.

    Args:
        offer: the offer (or its text).
        share: the mnemonic text.
        trusted_coordinator: the coordinator's raw public key, pinned by the custodian.
        trusted_alg: that pin's algorithm (``ed25519`` or ``ecdsa-p256``); the offer's
            signature is checked under it only.
        now: current Unix time in seconds.
        expected_session: required: the running ceremony the coordinator named, which the
            offer must be for; ``None`` only when the custodian was told no session (the
            blob is then sealed for the offer's signed session, which the caller must show).
        envelope: the share's envelope bytes, sent along; when given, the offer must be for
            the envelope's ceremony and epoch.
        expected_ceremony, expected_epoch: further pins by the custodian.
        rng: random bytes (ephemeral key, nonce).

    Returns:
        (blob text, SAS words).

    Raises:
        TransportError: the offer is damaged, unsigned, expired or for another ceremony,
            epoch or session.
    """
    o = parse_offer(offer) if isinstance(offer, str) else offer
    o = verify_offer(
        o,
        trusted_coordinator,
        now=now,
        alg=trusted_alg,
        expected_ceremony=expected_ceremony,
        expected_epoch=expected_epoch,
        expected_session=expected_session,
    )
    if envelope is not None:
        from custody.shares.envelope import load_envelope

        env = load_envelope(envelope).payload
        _check_binding(o.ceremony_id, o.epoch, env.ceremony_id, env.epoch)
    eph = X25519PrivateKey.from_private_bytes(rng(32))
    header = {
        "type": "custody-transport-blob",
        "version": FORMAT_VERSION,
        "ceremony_id": o.ceremony_id,
        "epoch": o.epoch,
        "session": o.session,
        "offer_key": o.public.hex(),
        "sender_key": _x_raw(eph.public_key()).hex(),
        "offer_sha256": o.digest().hex(),
    }
    try:
        key = _key(eph.exchange(X25519PublicKey.from_public_bytes(o.public)), o, header)
    except ValueError as exc:
        raise TransportError(
            "The offer key is invalid", "Ask for a fresh offer.", reason="malformed"
        ) from exc
    nonce = rng(12)
    body = canonical_bytes(
        {"share": share, "envelope": envelope.decode() if envelope is not None else None}
    )
    ct = AESGCM(key).encrypt(nonce, body, canonical_bytes(header))
    blob = BLOB_PREFIX + _b64(
        canonical_bytes({"header": header, "nonce": nonce.hex(), "ct": _b64(ct)})
    )
    return blob, sas(o.public, _x_raw(eph.public_key()))


def load_offer_key(text: str) -> OfferKey:
    """Parse an offer key file (see :meth:`OfferKey.to_json`).

    Raises:
        TransportError: ``malformed``.
    """
    try:
        doc = load_json(text)
        if doc["type"] != "custody-offer-key":
            raise ValueError("type")
        priv = X25519PrivateKey.from_private_bytes(bytes.fromhex(doc["x25519_private"]))
        offer = parse_offer(doc["offer"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TransportError(
            "The offer key file is damaged", "Make a new offer.", reason="malformed"
        ) from exc
    if _x_raw(priv.public_key()) != offer.public:
        raise TransportError(
            "The offer key file does not match its offer", "Make a new offer.", reason="malformed"
        )
    return OfferKey(offer=offer, private=priv)


def open_blob(blob: str, key: OfferKey, *, now: int, expected_session: str) -> HandIn:
    """Open a custodian's blob with the offer's private half.

    Args:
        blob: the ``custody-blob:...`` text.
        key: the offer's private half.
        now: current Unix time in seconds.
        expected_session: required: the id of the ceremony opening the blob (a ceremony
            passes its own id), so a blob (and an offer key) of another ceremony is refused.

    Raises:
        TransportError: ``malformed``, ``expired``, ``wrong-ceremony``, ``wrong-epoch``,
            ``wrong-session``, ``wrong-offer`` or ``tampered``.
    """
    o = key.offer
    doc = _unarmor(blob, BLOB_PREFIX)
    try:
        h, nonce, ct = doc["header"], bytes.fromhex(doc["nonce"]), doc["ct"]
        ct = base64.urlsafe_b64decode(ct + "=" * (-len(ct) % 4))
        sender = bytes.fromhex(h["sender_key"])
        if (
            h["type"] != "custody-transport-blob"
            or h["version"] != FORMAT_VERSION
            or len(sender) != 32
        ):
            raise ValueError("type")
        cer, epoch, session = h["ceremony_id"], h["epoch"], h["session"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TransportError(
            "The blob is damaged", "Ask the custodian to send it again.", reason="malformed"
        ) from exc
    if now > o.expires:
        raise TransportError(
            "The offer has expired", "Make a fresh offer and ask again.", reason="expired"
        )
    _check_binding(cer, epoch, o.ceremony_id, o.epoch)
    _check_session(o.session, expected_session)  # the offer key belongs to another ceremony
    _check_session(session, o.session)  # the blob was sealed for another session
    if h.get("offer_key") != o.public.hex() or h.get("offer_sha256") != o.digest().hex():
        raise TransportError(
            "The blob was sealed to a different offer",
            "It is a replay or meant for another session; refuse it.",
            reason="wrong-offer",
        )
    try:
        k = _key(key.private.exchange(X25519PublicKey.from_public_bytes(sender)), o, h)
        body = json.loads(AESGCM(k).decrypt(nonce, ct, canonical_bytes(h)))
        share, env = body["share"], body["envelope"]
        if not isinstance(share, str) or not (env is None or isinstance(env, str)):
            raise TypeError("body")
    except (InvalidTag, ValueError, KeyError, TypeError) as exc:
        raise TransportError(
            "The blob was altered or is not for this offer",
            "Ask the custodian to send it again; compare the words.",
            reason="tampered",
        ) from exc
    return HandIn(
        share=share, envelope=env.encode() if env is not None else None, sas=sas(o.public, sender)
    )

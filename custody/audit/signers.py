"""Signers and pinned trust keys shared by the audit log and ceremony transcripts.

A :class:`Signer` is anything with a ``name``, an ``alg``, a raw ``public`` key and a
``sign(data) -> bytes`` method. Two adapters are provided: :class:`Ed25519Signer` for a
participant's in-process key and :class:`HsmSigner` for a key held in the HSM (through
the :class:`custody.hsm.Hsm` port, so this module never imports ``pkcs11``).

A :class:`TrustKey` is a public key an auditor pinned on their own command line. Trust
key files are JSON ``{"alg": "ed25519", "public": "<64 hex>", "name": "...", "role": "..."}``
(``role`` optional) or a bare line of 64 hex digits (no name, no role). A key pinned
without a role identifies someone but never counts toward a transcript quorum
(:mod:`ceremonies.transcript.pins`).

Two algorithms verify (:data:`ALGORITHMS`), each with one encoding, so that a key can be
read as one algorithm only: ``ed25519`` (a raw 32-byte key, 64-byte signature) and
``ecdsa-p256`` (an X9.62 uncompressed point, 65 bytes starting 0x04 and on the curve; a
raw r||s signature of 64 bytes over SHA-256), the form a token without CKM_EDDSA (NSS
softokn) signs with. A pinned key carries its algorithm; a signature is checked with the
pinned key's algorithm only, and one whose recorded ``alg`` differs is not counted
(:func:`custody.audit.records.checkpoint_signers`). An ``ecdsa-p256`` key needs JSON: a
bare hex line is always Ed25519.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from custody.canonical import load_json
from custody.errors import UsageError
from custody.signing import fingerprint, public_raw
from custody.textsafe import printable

ED25519, ECDSA_P256 = "ed25519", "ecdsa-p256"
ALGORITHMS = (ED25519, ECDSA_P256)
AUDIT_KEY_LABEL = "audit"  # the token's audit signing key (checkpoints, server records)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PUBLIC_HEX = {ED25519: re.compile(r"^[0-9a-f]{64}$"), ECDSA_P256: re.compile(r"^04[0-9a-f]{128}$")}
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@runtime_checkable
class Signer(Protocol):
    """Something that signs with a key whose public half is known."""

    @property
    def name(self) -> str: ...

    @property
    def alg(self) -> str: ...

    @property
    def public(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Ed25519Signer:
    """An in-process Ed25519 key (a participant's, or a test key)."""

    name: str
    key: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Ed25519Signer:
        """A deterministic key from a 32-byte seed (tests and fixtures only)."""
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def alg(self) -> str:
        return "ed25519"

    @property
    def public(self) -> bytes:
        return public_raw(self.key)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


class SigningHsm(Protocol):
    """The part of the :class:`custody.hsm.Hsm` port an :class:`HsmSigner` uses."""

    def ensure_signing_key(
        self, label: str, algorithms: tuple[str, ...] | None = None
    ) -> tuple[str, bytes]: ...

    def sign(self, label: str, data: bytes) -> bytes: ...


class HsmSigner:
    """A signing key held in the HSM under *label* (e.g. the audit key).

    Only algorithms :func:`verify_signature` checks are accepted (*algorithms*, by
    default :data:`ALGORITHMS`: Ed25519, else ECDSA P-256 on a token without CKM_EDDSA); a
    token with none of them is refused before a key is created (MechanismUnsupported),
    never given a key whose signatures no verifier accepts.

    Raises (from the constructor and :meth:`sign`): HsmError subclasses from the port.
    """

    def __init__(
        self, name: str, hsm: SigningHsm, label: str, algorithms: tuple[str, ...] = ALGORITHMS
    ) -> None:
        if not algorithms or set(algorithms) - set(ALGORITHMS):
            raise ValueError(f"algorithms must be drawn from {ALGORITHMS}")
        self._name, self._hsm, self._label = name, hsm, label
        alg, pub = hsm.ensure_signing_key(label, algorithms)
        if str(alg) not in algorithms or not public_key_ok(str(alg), bytes(pub)):
            raise ValueError(f"the token returned a {alg} key this verifier cannot check")
        self._alg, self._public = str(alg), bytes(pub)

    @property
    def name(self) -> str:
        return self._name

    @property
    def alg(self) -> str:
        return self._alg

    @property
    def public(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return bytes(self._hsm.sign(self._label, data))

    def __repr__(self) -> str:
        return f"HsmSigner(name={self._name!r}, label={self._label!r})"


class Sealer(Protocol):
    """Something that MACs data under a key the log's writers cannot read."""

    def mac(self, data: bytes) -> bytes: ...


class MacHsm(Protocol):
    """The part of the :class:`custody.hsm.Hsm` port an :class:`HsmSealer` uses."""

    def ensure_mac_key(self, label: str) -> None: ...

    def mac(self, label: str, data: bytes) -> bytes: ...


class HsmSealer:
    """Seals the audit chain with HMAC-SHA256 under a token-held key (label ``audit-mac``).

    Whoever can write ``audit.db`` but does not hold the token cannot make a seal, so a
    rewritten and re-chained log no longer matches its newest seal.

    Raises (from the constructor with ``create=True`` and from :meth:`mac`): HsmError.
    """

    def __init__(self, hsm: MacHsm, label: str = "audit-mac", *, create: bool = False) -> None:
        self._hsm, self.label = hsm, label
        if create:
            hsm.ensure_mac_key(label)

    def mac(self, data: bytes) -> bytes:
        return bytes(self._hsm.mac(self.label, data))

    def __repr__(self) -> str:
        return f"HsmSealer(label={self.label!r})"


def public_key_ok(alg: str, public: bytes) -> bool:
    """Whether *public* is a key of *alg* in its one accepted encoding (see the module
    docstring): Ed25519 32 bytes; ECDSA P-256 an uncompressed point on the curve."""
    if alg == ED25519:
        return len(public) == 32
    if alg == ECDSA_P256 and len(public) == 65 and public[0] == 4:
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
        except ValueError:
            return False
        return True
    return False


def verify_signature(alg: str, public: bytes, signature: bytes, data: bytes) -> bool:
    """True when *signature* is a valid *alg* signature of *data* under *public*.

    ``ed25519``: RFC 8032 over *data*. ``ecdsa-p256``: raw r||s (64 bytes, 0 < r, s < n)
    over SHA-256(*data*). Anything else, or a key or signature of the wrong form, is False.
    """
    if len(signature) != 64 or not public_key_ok(alg, public):
        return False
    try:
        if alg == ED25519:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
            return True
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
            return False
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustKey:
    """A public key pinned by the auditor, with the role the auditor vouches for (or None)."""

    name: str
    alg: str
    public: bytes
    role: str | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def to_json(self) -> dict[str, str]:
        d = {"alg": self.alg, "public": self.public.hex(), "name": self.name}
        if self.role is not None:
            d["role"] = self.role
        return d

    @classmethod
    def of(cls, signer: Signer) -> TrustKey:
        return cls(name=signer.name, alg=signer.alg, public=signer.public)


def parse_trust_key(raw: bytes, *, default_name: str = "pinned") -> TrustKey:
    """Parse a trust key file (JSON or a bare hex line).

    Raises:
        UsageError: the file holds neither form, or an unsupported algorithm.
    """
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:  # read as it is, never with replacement characters
        raise UsageError(
            "Not a trust key file (not UTF-8 text)", "Obtain the key file again out of band."
        ) from exc
    if _HEX64.match(text.lower()):
        return TrustKey(name=default_name, alg="ed25519", public=bytes.fromhex(text.lower()))
    try:
        doc = load_json(text)
        alg, pub = doc.get("alg", "ed25519"), doc["public"]
        name, role, fp = doc.get("name"), doc.get("role"), doc.get("fingerprint")
        # every field is read as what it is: a number where a name belongs is refused, not
        # turned into the name "1"
        if not all(isinstance(v, str) for v in (alg, pub)) or not all(
            v is None or isinstance(v, str) for v in (name, role, fp)
        ):
            raise TypeError("trust key fields must be strings")
        pub, name = pub.lower(), name or default_name
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(
            "Not a trust key file",
            'Give JSON {"alg": "ed25519", "public": "<64 hex>", "name": "..."} or 64 hex digits.',
        ) from exc
    pattern = _PUBLIC_HEX.get(alg)
    if pattern is None or not pattern.match(pub) or not public_key_ok(alg, bytes.fromhex(pub)):
        raise UsageError(
            f"Unsupported trust key ({printable(alg)})",
            "Accepted: raw Ed25519 public keys (alg ed25519, 64 hex) and ECDSA P-256 "
            "uncompressed points on the curve (alg ecdsa-p256, 130 hex starting 04).",
        )
    key = TrustKey(name=name, alg=alg, public=bytes.fromhex(pub), role=role or None)
    if fp is not None and fp != key.fingerprint:
        raise UsageError(
            f"Trust key {name}: the fingerprint does not match the public key",
            "The file was altered; obtain the key again out of band.",
        )
    return key

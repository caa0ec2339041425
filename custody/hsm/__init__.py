"""The HSM port: what custody needs from any PKCS#11 token.

Code outside :mod:`custody.hsm.pkcs11.adapter` talks to a token only through the
:class:`Hsm` protocol below, so the rest of custody never sees ``pkcs11`` types or
exceptions. Token objects are named ``"{label}/v{version}"`` (for example ``root/v3``);
signing keys are named by label alone.

Every method may raise a subclass of :class:`custody.errors.HsmError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from custody.errors import HsmError, IntegrityError

KCV_LEN = 3  # bytes of AES-ECB(key, 0^128) shown as the key check value (6 hex digits)
KeyUse = Literal["seal", "wrap"]  # sealing only (see KEK_SEALS), or key wrap only

# How data is sealed under a token "seal" key (roots, hold keys), chosen per token by a
# known-answer test (custody.hsm.pkcs11.probe) and recorded in the home ([hsm] kek_seal):
# in-token AES-256-GCM where it works, else AES-256-CBC-PAD + HMAC-SHA256 (encrypt then
# MAC) under two session keys that the token unwraps from random bytes under the seal key
# with AES-ECB, so that neither key's value is ever outside the token (docs/keys.md).
KEK_SEAL_GCM = "aes-gcm"
KEK_SEAL_CBC_HMAC = "aes-cbc-hmac"
KEK_SEALS = (KEK_SEAL_GCM, KEK_SEAL_CBC_HMAC)  # preference order

# Key-wrap formats of a wrapped key blob (chosen per token by a known-answer test, see
# custody.hsm.pkcs11.probe). An RFC 5649 blob is stored as it is (40 bytes for an AES-256
# key, the format custody always wrote); an RFC 3394 blob carries a 4-byte tag, so that the
# format is recorded in the blob and any token that does that format can open it.
WRAP_RFC5649 = "rfc5649"
WRAP_RFC3394 = "rfc3394"
RFC3394_TAG = b"CKW3"


def encode_wrapped(fmt: str, raw: bytes) -> bytes:
    """The stored form of a key wrapped in format *fmt* (see :data:`RFC3394_TAG`)."""
    if fmt == WRAP_RFC5649:
        return raw
    if fmt == WRAP_RFC3394:
        return RFC3394_TAG + raw
    raise ValueError(f"unknown key-wrap format {fmt!r}")


def decode_wrapped(blob: bytes) -> tuple[str, bytes]:
    """(format, raw wrapped bytes) of a stored wrapped key."""
    body = blob[len(RFC3394_TAG) :]
    if blob.startswith(RFC3394_TAG) and len(body) >= 24 and len(body) % 8 == 0:
        return WRAP_RFC3394, body
    return WRAP_RFC5649, blob


class KeyNotExtractable(HsmError):
    """The token refuses to wrap a key out: CKA_EXTRACTABLE is false (PKCS#11 v3.0 §4.4)."""


class KekSealMismatch(IntegrityError):
    """The home records another way of sealing than the token does (an edited record, or a
    token of another kind): nothing is sealed or opened, whatever the caller would skip."""


class KeyExists(HsmError):
    """A key with that label and version is already on the token; it is never overwritten."""


def object_label(label: str, version: int) -> str:
    """The token object label of a versioned key: ``root/v1``."""
    return f"{label}/v{version}"


def kcv_of_bytes(key: bytes) -> str:
    """The key check value of raw AES key bytes, computed in process.

    It is the same value a token computes with CKM_AES_ECB over 16 zero bytes, so a key held
    only as bytes (the recovery key RK) can be compared with a token key's :attr:`KeyRef.kcv`.

    Args:
        key: a 16, 24 or 32 byte AES key.

    Returns:
        The first 3 bytes of AES-ECB(key, 16 zero bytes), as 6 lower-case hex digits.

    Raises:
        ValueError: *key* is not a valid AES key length.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if len(key) not in (16, 24, 32):
        raise ValueError("an AES key is 16, 24 or 32 bytes")
    # The KCV is defined over one ECB block of zeros (PKCS#11 v3.0 CKA_CHECK_VALUE for AES).
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305
    return (enc.update(bytes(16)) + enc.finalize())[:KCV_LEN].hex()


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRef:
    """A secret key on the token: its label, version and key check value (hex)."""

    label: str
    version: int
    kcv: str
    extractable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedKey:
    """A token key wrapped inside the token for a P-256 public key (:meth:`Hsm.seal_to_public`).

    *wrapped* is the token's key wrap (RFC 5649, or tagged RFC 3394: :func:`encode_wrapped`)
    under the ECDH (null KDF) secret of the ephemeral key pair whose public point is
    *ephemeral_public* and the recipient's key; *kcv* is the wrapped key's.
    None of it is secret.
    """

    ephemeral_public: bytes
    wrapped: bytes
    kcv: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInfo:
    """What a status screen shows about the token."""

    module: str
    slot_id: int
    label: str
    manufacturer: str
    model: str
    serial: str
    library_version: str


REQUIRED_CHECKS = (
    "random",
    "aes_key_gen",
    "kek_seal",
    "key_wrap",
    "kcv",
    "ecdh",
    "ecdh_wrap",
)  # what every ceremony needs (custody.hsm.pkcs11.probe.NEEDS)


@dataclass(frozen=True, slots=True, kw_only=True)
class SelftestReport:
    """Outcome of :meth:`Hsm.selftest`: per mechanism, whether it is offered and works."""

    token: TokenInfo
    mechanisms: dict[str, bool] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    signing_algorithm: str = ""
    errors: dict[str, str] = field(default_factory=dict)  # check name -> error title
    results: dict[str, str] = field(default_factory=dict)  # check -> pass / fail / missing
    choices: dict[str, str] = field(default_factory=dict)  # what custody uses on this token

    @property
    def ok(self) -> bool:
        """Every check custody relies on passed, and no other check failed (a check the
        token merely lacks, such as enforcing CKA_ALLOWED_MECHANISMS, is not a failure)."""
        if not self.results:
            return all(self.checks.values())
        return all(self.results.get(k) == "pass" for k in REQUIRED_CHECKS) and all(
            v != "fail" for v in self.results.values()
        )


class Hsm(Protocol):
    """A logged-in PKCS#11 token. Calls are serialised by the implementation."""

    def info(self) -> TokenInfo: ...

    def selftest(self) -> SelftestReport: ...

    def preflight(self, needs: tuple[str, ...] = ()) -> dict[str, str]:
        """Run the known-answer tests (session objects only) and refuse an unsuitable token.

        Returns what custody will use on this token (e.g. ``{"key_wrap": "rfc5649 ..."}``).

        Raises:
            MechanismUnsupported: a needed mechanism is missing or fails its test; the
                title names each one.
        """
        ...

    def unwrap_formats(self) -> frozenset[str]:
        """The key-wrap formats whose blobs this token opens (by known-answer test)."""
        ...

    def check_wrapped(self, wrapping_key: bytes, blob: bytes) -> str:
        """Open a wrapped-key *blob* under *wrapping_key* into a short-lived session object
        (nothing is stored) and return its KCV."""
        ...

    def random(self, n: int) -> bytes: ...

    # --- AES-256 secret keys held on the token -------------------------------------
    def generate_aes_key(
        self, label: str, version: int, *, extractable: bool, use: KeyUse = "seal"
    ) -> KeyRef:
        """Generate a sensitive AES-256 key whose CKA_ALLOWED_MECHANISMS is *use*'s alone
        (``seal``: AES-GCM; ``wrap``: RFC 5649). An *extractable* key is volatile: a session
        object of this login until :meth:`set_non_extractable` stores a locked token copy;
        a crash or a closed session drops it."""
        ...

    def find_key(self, label: str, version: int) -> KeyRef:
        """Raises KeyNotFound when absent."""
        ...

    def list_keys(self, label: str | None = None) -> list[KeyRef]: ...

    def destroy_key(self, label: str, version: int) -> None: ...

    def set_non_extractable(self, label: str, version: int) -> None:
        """Lock the key: a volatile key becomes a non-extractable token object; a token
        key has CKA_EXTRACTABLE cleared (one-way, PKCS#11 v3.0 §4.4)."""
        ...

    def seal_to_public(self, label: str, version: int, recipient_public: bytes) -> SealedKey:
        """Wrap the key inside the token for a P-256 public key (ephemeral ECDH in the
        token, a derived non-extractable AES key, RFC 5649), checked by an in-token
        round trip. No wrapping key and no key bytes reach the host."""
        ...

    def export_wrapped(self, label: str, version: int, wrapping_key: bytes) -> bytes:
        """Wrap the token key under *wrapping_key* (raw AES-256 bytes, e.g. RK) with the
        token's key wrap (RFC 5649, else RFC 3394, by known-answer test; the blob records
        which), checked by an in-token round trip. The wrapping key lives only in a session
        object."""
        ...

    def import_wrapped(
        self,
        label: str,
        version: int,
        wrapping_key: bytes,
        blob: bytes,
        *,
        use: KeyUse = "seal",
    ) -> KeyRef:
        """Unwrap *blob* under *wrapping_key* straight into a non-extractable token key
        limited to *use*."""
        ...

    def encrypt(
        self, label: str, version: int, plaintext: bytes, aad: bytes
    ) -> tuple[bytes, bytes]:
        """AES-256-GCM under a token key. Returns (nonce, ciphertext||tag)."""
        ...

    def decrypt(
        self, label: str, version: int, nonce: bytes, ciphertext: bytes, aad: bytes
    ) -> bytes:
        """Raises IntegrityError when the tag does not verify."""
        ...

    def kek_seal(self) -> str:
        """How this token seals (:data:`KEK_SEALS`), by the known-answer test, checked
        against the home's record.

        Raises:
            MechanismUnsupported: neither way works on this token.
            IntegrityError: the home records another way than the token does.
        """
        ...

    def seal(self, label: str, version: int, plaintext: bytes, aad: bytes) -> bytes:
        """Seal *plaintext* under the token key ``label/vN`` the way :meth:`kek_seal`
        names: ``aes-gcm``: nonce (12) || ciphertext || tag (16), as :meth:`encrypt`;
        ``aes-cbc-hmac``: a self-describing blob (``CKS1`` ...). Both bind *aad*."""
        ...

    def unseal(self, label: str, version: int, sealed: bytes, aad: bytes) -> bytes:
        """Undo :meth:`seal`. Only the way the home records is tried (no downgrade).

        Raises:
            IntegrityError: the blob, *aad* or the key differ, or the blob is of the
                other way.
        """
        ...

    def wrap_bytes(self, label: str, version: int, key_bytes: bytes) -> bytes:
        """RFC 5649 wrap of raw key bytes under a token key (CKM_AES_KEY_WRAP_PAD)."""
        ...

    def unwrap_bytes(self, label: str, version: int, blob: bytes) -> bytes: ...

    # --- signing keys --------------------------------------------------------------
    def ensure_signing_key(
        self, label: str, algorithms: tuple[str, ...] | None = None
    ) -> tuple[str, bytes]:
        """Create the signing key pair if absent; return (algorithm, public key bytes).
        algorithm is "ed25519" (raw 32 bytes) or "ecdsa-p256" (X9.62 uncompressed point);
        with *algorithms*, any other is refused (MechanismUnsupported) before creation."""
        ...

    def sign(self, label: str, data: bytes) -> bytes: ...

    def verify(self, label: str, data: bytes, signature: bytes) -> None:
        """Raises IntegrityError on a bad signature."""
        ...

    # --- MAC keys (HMAC-SHA256 under a token-held generic secret) ------------------
    def ensure_mac_key(self, label: str) -> None:
        """Create the non-extractable HMAC-SHA256 key *label* if absent."""
        ...

    def mac(self, label: str, data: bytes) -> bytes:
        """HMAC-SHA256 of *data* under the token key *label*. Raises KeyNotFound."""
        ...

    # --- monotonic counters (token objects only a logged-in user can write) --------
    def counter(self, label: str) -> int | None:
        """The counter *label*'s value, None when the token holds none."""
        ...

    def advance_counter(self, label: str, value: int) -> int:
        """Raise the counter *label* to *value* (never lower it); return its value after."""
        ...

    def counter_labels(self) -> list[str]:
        """The labels of every counter the token holds (each once, sorted)."""
        ...

    # --- key agreement (sealing a share to a custodian's own token) ---------------
    def ensure_ecdh_key(self, label: str) -> bytes:
        """Create a P-256 ECDH key pair if absent; return the X9.62 uncompressed public point."""
        ...

    def ecdh_derive(self, label: str, peer_public: bytes) -> bytes:
        """CKM_ECDH1_DERIVE (null KDF) with the token key; return the 32-byte shared secret."""
        ...

    def close(self) -> None: ...

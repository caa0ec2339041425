"""The wrapped-object envelope: how every ciphertext in custody names its key.

Layout (all integers big-endian; see ``docs/formats.md``)::

    offset  size  field
    0       1     format version, 0x01
    1       1     L = length of the key id
    2       L     key id, ASCII ("root", "data", "backup", "secrets")
    2+L     4     key version (uint32)
    6+L     12    nonce (AES-GCM, 96-bit)
    18+L    n     ciphertext
    18+L+n  16    GCM tag

The additional authenticated data is ``bytes[0 : 6+L] || context``: the header without the
nonce (GCM authenticates the nonce itself) followed by a caller-supplied *context* that
binds the ciphertext to its place (for example the object's uid), so a wrapped value cannot
be swapped between rows or key ids. The same envelope serves KEKs sealed by the HSM root key
(AES-GCM inside the token) and DEKs sealed in process under a KEK.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custody.errors import IntegrityError

FORMAT_VERSION = 1
NONCE_LEN = 12
TAG_LEN = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A parsed envelope. ``body`` is ciphertext||tag."""

    key_id: str
    key_version: int
    nonce: bytes
    body: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not 0 < len(self.key_id) < 256 or not self.key_id.isascii():
            raise ValueError("key id must be 1..255 ASCII characters")
        if not 0 <= self.key_version < 2**32:
            raise ValueError("key version out of range")
        if len(self.nonce) != NONCE_LEN:
            raise ValueError("nonce must be 12 bytes")

    def aad(self, context: bytes) -> bytes:
        return header(self.key_id, self.key_version) + context

    def to_bytes(self) -> bytes:
        return header(self.key_id, self.key_version) + self.nonce + self.body


def header(key_id: str, key_version: int) -> bytes:
    kid = key_id.encode("ascii")
    return bytes([FORMAT_VERSION, len(kid)]) + kid + struct.pack(">I", key_version)


def parse(blob: bytes) -> Envelope:
    """Parse an envelope.

    Raises:
        IntegrityError: the bytes are not a well-formed envelope of a known version.
    """
    bad = IntegrityError(
        "Malformed wrapped object", "The stored ciphertext is damaged or not custody's."
    )
    if len(blob) < 2 or blob[0] != FORMAT_VERSION:
        raise bad
    klen = blob[1]
    end = 2 + klen + 4 + NONCE_LEN
    if klen == 0 or len(blob) < end + TAG_LEN:
        raise bad
    try:
        key_id = blob[2 : 2 + klen].decode("ascii")
    except UnicodeDecodeError as exc:
        raise bad from exc
    (version,) = struct.unpack(">I", blob[2 + klen : 6 + klen])
    return Envelope(key_id=key_id, key_version=version, nonce=blob[6 + klen : end], body=blob[end:])


def seal(
    key: bytes,
    key_id: str,
    key_version: int,
    plaintext: bytes,
    context: bytes,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt *plaintext* under a raw AES-256 *key* into an envelope (in process)."""
    n = nonce if nonce is not None else os.urandom(NONCE_LEN)
    aad = header(key_id, key_version) + context
    return header(key_id, key_version) + n + AESGCM(key).encrypt(n, plaintext, aad)


class Sealer:
    """:func:`seal` under one key and key version, many times: the header and the ``AESGCM``
    object are built once (the bulk path of ``dek generate``)."""

    __slots__ = ("_aead", "_header")

    def __init__(self, key: bytes, key_id: str, key_version: int) -> None:
        self._aead = AESGCM(key)
        self._header = header(key_id, key_version)

    def __repr__(self) -> str:
        return "Sealer(...)"

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        n = os.urandom(NONCE_LEN)
        return self._header + n + self._aead.encrypt(n, plaintext, self._header + context)


class Opener:
    """Opens envelopes under one key and key version, many times (``dek verify``): the
    header, its length and the ``AESGCM`` object are built once.

    :meth:`open` checks exactly what :func:`parse` then :func:`open_sealed` check for an
    envelope that must be under *key_id*/v*key_version*: the format version, key id and key
    version (the whole header, byte for byte; the tag covers the *expected* header, so a
    changed stored one would otherwise go unseen), the nonce and tag lengths, and the GCM tag
    over the header and *context*. A hot loop may inline it from :attr:`header`,
    :attr:`min_len`, :attr:`aad_prefix` and :attr:`decrypt` (which raises ``InvalidTag``).
    """

    __slots__ = ("aad_prefix", "decrypt", "header", "min_len")

    def __init__(
        self, key: bytes, key_id: str, key_version: int, *, context_prefix: bytes = b""
    ) -> None:
        self.decrypt = AESGCM(key).decrypt
        self.header = header(key_id, key_version)
        self.min_len = len(self.header) + NONCE_LEN + TAG_LEN
        self.aad_prefix = self.header + context_prefix

    def __repr__(self) -> str:
        return "Opener(...)"

    def open(self, blob: object, context_suffix: bytes) -> bytes | None:
        """The plaintext of *blob* under context ``context_prefix + context_suffix``, or
        ``None`` if *blob* is not a valid envelope under this key and key version."""
        hl = len(self.header)
        if type(blob) is not bytes or len(blob) < self.min_len or blob[:hl] != self.header:
            return None
        try:
            return self.decrypt(
                blob[hl : hl + NONCE_LEN], blob[hl + NONCE_LEN :], self.aad_prefix + context_suffix
            )
        except InvalidTag:
            return None


def open_sealed(key: bytes, env: Envelope, context: bytes) -> bytes:
    """Decrypt an envelope under a raw key.

    Raises:
        IntegrityError: the tag does not verify (wrong key, wrong context, or tampering).
    """
    try:
        return AESGCM(key).decrypt(env.nonce, env.body, env.aad(context))
    except InvalidTag as exc:
        raise IntegrityError(
            f"Wrapped object under {env.key_id}/v{env.key_version} failed to decrypt",
            "The ciphertext was altered, moved, or the key version is wrong.",
        ) from exc

"""The backup container format: header and STREAM chunks (pure; no files, no HSM).

Layout (integers big-endian; see ``docs/backups.md`` and the "Backup container" section of
``docs/formats.md``)::

    offset size  field
    0      8     magic "CUSTBAK\\0"
    8      1     format version, 1
    9      1     flags, 0
    10     4     chunk size C (plaintext bytes per chunk)
    14     16    file id (random)
    30     7     nonce prefix (random per key)
    --- 37 bytes: the *fixed header*; H = SHA-256("custody/backup/header/v1" || fixed)
    37     2     W = length of the wrapped key
    39     W     the per-backup key as a custody envelope under backup KEK vN,
                 context "custody/backup/key/" || H
    39+W   ...   chunks: AES-256-GCM(K, nonce_i, chunk_i, aad=H), each C+16 bytes but the last

``nonce_i = prefix (7) || i (uint32) || last (1 byte: 1 on the final chunk, else 0)``: the
STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015). Reordering or swapping
chunks changes ``i``; dropping the tail leaves a chunk whose flag says "not last";
appending makes the real last chunk non-final; editing the fixed header changes ``H``.

The wrapped key is *not* in ``H``: a header-only rewrap (new KEK version) replaces it
without touching a single chunk, in O(1). The key envelope itself is authenticated under
the KEK and bound to ``H``, so it cannot be moved to another backup.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field

from custody.errors import IntegrityError
from custody.keys import wrapped as envelope

MAGIC = b"CUSTBAK\x00"
FORMAT = 1
FIXED_LEN = 37
PREFIX_LEN = 7
TAG = 16
DEFAULT_CHUNK = 1 << 20
MIN_CHUNK = 1 << 10
MAX_CHUNK = 1 << 26
BRANCH = "backup"


def _bad(what: str) -> IntegrityError:
    return IntegrityError(
        f"The backup {what}",
        "The file is damaged, truncated, reordered or not a custody backup; "
        "restore from another copy.",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """A parsed backup header. ``wrapped`` is the key envelope (ciphertext only)."""

    chunk_size: int
    file_id: bytes
    prefix: bytes
    wrapped: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not MIN_CHUNK <= self.chunk_size <= MAX_CHUNK:
            raise ValueError("chunk size out of range")
        if len(self.file_id) != 16 or len(self.prefix) != PREFIX_LEN:
            raise ValueError("bad file id or nonce prefix length")

    @property
    def fixed(self) -> bytes:
        return (
            MAGIC
            + bytes([FORMAT, 0])
            + struct.pack(">I", self.chunk_size)
            + self.file_id
            + self.prefix
        )

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(b"custody/backup/header/v1" + self.fixed).digest()

    @property
    def key_context(self) -> bytes:
        return b"custody/backup/key/" + self.digest

    @property
    def kek_version(self) -> int:
        return envelope.parse(self.wrapped).key_version

    def to_bytes(self) -> bytes:
        return self.fixed + struct.pack(">H", len(self.wrapped)) + self.wrapped

    @property
    def length(self) -> int:
        return FIXED_LEN + 2 + len(self.wrapped)


def new_header(chunk_size: int = DEFAULT_CHUNK, *, file_id: bytes | None = None) -> Header:
    """A header with a fresh file id and nonce prefix, and no wrapped key yet."""
    return Header(
        chunk_size=chunk_size,
        file_id=file_id or os.urandom(16),
        prefix=os.urandom(PREFIX_LEN),
        wrapped=b"",
    )


def wrap_key(header: Header, kek: bytes, kek_version: int, key: bytes) -> Header:
    """Return *header* with *key* sealed under backup KEK v*kek_version* (in process)."""
    from dataclasses import replace

    sealed = envelope.seal(kek, BRANCH, kek_version, key, header.key_context)
    return replace(header, wrapped=sealed)


def unwrap_key(header: Header, kek: bytes) -> bytes:
    """Open the per-backup key.

    Raises:
        IntegrityError: the wrapped key or the fixed header was altered.
    """
    env = envelope.parse(header.wrapped)
    if env.key_id != BRANCH:
        raise _bad("header names a key outside the backup branch")
    try:
        return envelope.open_sealed(kek, env, header.key_context)
    except IntegrityError as exc:
        raise _bad("header failed to verify (wrong key, or the header was altered)") from exc


def parse_header(data: bytes) -> Header:
    """Parse the header from the first bytes of a file (at least :func:`header_length`).

    Raises:
        IntegrityError: not a custody backup of a known format, or a damaged header.
    """
    if len(data) < FIXED_LEN + 2 or data[:8] != MAGIC:
        raise _bad("is not a custody backup (bad magic)")
    if data[8] != FORMAT or data[9] != 0:
        raise _bad(f"has an unknown format version {data[8]}")
    (chunk,) = struct.unpack(">I", data[10:14])
    (wlen,) = struct.unpack(">H", data[FIXED_LEN : FIXED_LEN + 2])
    if len(data) < FIXED_LEN + 2 + wlen or not MIN_CHUNK <= chunk <= MAX_CHUNK:
        raise _bad("header is truncated or malformed")
    wrapped = data[FIXED_LEN + 2 : FIXED_LEN + 2 + wlen]
    envelope.parse(wrapped)  # well-formed, or IntegrityError
    return Header(chunk_size=chunk, file_id=data[14:30], prefix=data[30:37], wrapped=wrapped)


def nonce(prefix: bytes, index: int, last: bool) -> bytes:
    """STREAM nonce of chunk *index*."""
    if not 0 <= index < 2**32:
        raise ValueError("too many chunks")
    return prefix + struct.pack(">IB", index, 1 if last else 0)


def chunk_count(body_len: int, chunk_size: int) -> int:
    """How many chunks a ciphertext body of *body_len* bytes holds.

    Raises:
        IntegrityError: the length cannot be a whole container (truncated).
    """
    step = chunk_size + TAG
    n = -(-body_len // step)
    if n == 0 or body_len - (n - 1) * step < TAG:
        raise _bad("is truncated")
    return n

"""Encrypted backups under the separate ``backup`` KEK branch: create, verify, restore, re-key.

Each backup has its own random AES-256 key, sealed in the header under the current backup
KEK (format: :mod:`custody.backup.format`). Backups are recorded in the store's ``backups``
catalog (file id, path, KEK version), so a backup KEK version is never disabled while a
known backup still needs it.

Durability rules (see ``docs/backups.md``):

* create and restore write a fresh 0600 temporary file beside DST
  (:func:`custody.privatefile.private_file`: ``O_EXCL|O_NOFOLLOW``, never through a link),
  fsync, and link it to DST only after the last chunk is verified: a crash never leaves a
  half file under the final name, and an existing DST is never replaced;
* header rewrap (:func:`rewrap`) writes a checksummed journal in the custody home, fsyncs
  it, then overwrites the fixed-length headers in place; a crash is repaired by replaying
  the journal (:func:`recover`) before any other backup operation;
* full re-encryption (:mod:`custody.backup.rekey`) streams into ``FILE.rekey-tmp`` with a
  checkpoint sidecar and replaces the original atomically only after the new file verifies.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custody.backup import format as bf
from custody.clock import iso
from custody.config import Home
from custody.errors import IntegrityError, StorageError, UsageError
from custody.keys.hierarchy import KeyHierarchy
from custody.privatefile import private_file
from custody.store.rows import BackupEntry

JOURNAL_NAME = "backup-rewrap.journal"
Write = Callable[[int, bytes | memoryview], int]


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupInfo:
    """What an operation on one backup found or produced (no key material)."""

    path: str
    file_id: str
    kek_version: int
    chunk_size: int
    chunks: int
    plaintext_bytes: int


def storage_error(exc: OSError, what: str) -> StorageError:
    """Translate an OSError into a typed StorageError (disk full gets its own title)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(
            f"The disk is full while {what}",
            "Free space and run the command again; the original is untouched "
            "and the work resumes from its last checkpoint.",
        )
    return StorageError(
        f"I/O error while {what}: {exc.strerror or type(exc).__name__}",
        "Check the path and permissions; the original is untouched.",
    )


def open_backup(path: Path) -> int:
    """Open a backup file read-only; an OSError becomes a StorageError."""
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise storage_error(exc, f"opening {path.name}") from exc


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """An OSError inside becomes a StorageError (*what*). The output itself is written with
    :func:`custody.privatefile.private_file`, which removes its temporary file on failure."""
    try:
        yield
    except OSError as exc:
        raise storage_error(exc, what) from exc


def _info(path: Path, header: bf.Header, chunks: int, plain: int) -> BackupInfo:
    return BackupInfo(
        path=str(path),
        file_id=header.file_id.hex(),
        kek_version=header.kek_version,
        chunk_size=header.chunk_size,
        chunks=chunks,
        plaintext_bytes=plain,
    )


def write_all(fd: int, data: bytes | memoryview, write: Write = os.write) -> None:
    """Write every byte (os.write may write less)."""
    mv = memoryview(data)
    while mv:
        n = write(fd, mv)
        mv = mv[n:]


def read_exact(fd: int, buf: memoryview, offset: int) -> None:
    """Fill *buf* from *offset*.

    Raises:
        IntegrityError: the file ended early (truncated while reading).
    """
    got = 0
    while got < len(buf):
        n = os.preadv(fd, [buf[got:]], offset + got)
        if n == 0:
            raise bf._bad("is truncated")
        got += n


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_header(fd: int) -> bf.Header:
    """Read and parse the header of an open backup.

    Raises:
        IntegrityError: not a custody backup, or its header is damaged.
    """
    return bf.parse_header(os.pread(fd, 4096, 0))


def backup_key(hierarchy: KeyHierarchy, header: bf.Header) -> bytes:
    """Unwrap the per-backup key (the KEK comes from the HSM once per process).

    Raises:
        IntegrityError: wrong key or altered header. PolicyError: the KEK version is retired.
    """
    kek = hierarchy.kek_plaintext(bf.BRANCH, header.kek_version)
    return bf.unwrap_key(header, kek)


def iter_chunks(
    fd: int, header: bf.Header, key: bytes, *, start: int = 0
) -> Iterator[tuple[int, bool, memoryview]]:
    """Decrypt and yield ``(index, last, plaintext)`` for each chunk from *start*.

    The plaintext view is reused between chunks: copy it if you keep it.

    Raises:
        IntegrityError: a chunk fails (tampered, reordered, swapped) or the file is truncated.
    """
    size = os.fstat(fd).st_size
    n = bf.chunk_count(size - header.length, header.chunk_size)
    step = header.chunk_size + bf.TAG
    aead = AESGCM(key)
    aad = header.digest
    ct = bytearray(step)
    pt = bytearray(header.chunk_size)
    for i in range(start, n):
        off = header.length + i * step
        clen = min(step, size - off)
        view = memoryview(ct)[:clen]
        read_exact(fd, view, off)
        last = i == n - 1
        out = memoryview(pt)[: clen - bf.TAG]
        try:
            aead.decrypt_into(bf.nonce(header.prefix, i, last), view, aad, out)
        except InvalidTag as exc:
            raise bf._bad(f"chunk {i} of {n} failed to verify") from exc
        yield i, last, out


def _home_of(hierarchy: KeyHierarchy) -> Home:
    return Home(hierarchy.store.path.parent)


def _catalog(hierarchy: KeyHierarchy, header: bf.Header, path: Path, size: int) -> None:
    entry = BackupEntry(
        file_id=header.file_id,
        path=_home_of(hierarchy).rel(path),  # inside the home: relative (a copy is its own)
        kek_version=header.kek_version,
        size=size,
    )
    hierarchy.store.catalog_backup(entry, now=iso(hierarchy.clock()))


def create(
    hierarchy: KeyHierarchy,
    src: Path,
    out: Path,
    *,
    chunk_size: int = bf.DEFAULT_CHUNK,
    write: Write = os.write,
    progress: Callable[[int], None] | None = None,
) -> BackupInfo:
    """Encrypt *src* into a new backup *out* under the current backup KEK.

    Raises:
        UsageError: *out* exists or *src* is missing. StorageError: I/O failure or disk full
        (nothing is left under *out*). HsmError, PolicyError, CeremonyError: no backup KEK.
    """
    src, out = Path(src), Path(out).resolve()
    if out.exists():
        raise UsageError(f"{out} already exists", "Choose another --out; nothing was changed.")
    kek_v = hierarchy.current_kek(bf.BRANCH).version
    kek = hierarchy.kek_plaintext(bf.BRANCH, kek_v, for_encrypt=True)
    key = os.urandom(32)
    header = bf.wrap_key(bf.new_header(chunk_size), kek, kek_v, key)
    try:
        sfd = os.open(src, os.O_RDONLY)
    except OSError as exc:
        raise UsageError(f"Cannot read {src}", f"{exc.strerror}; nothing was changed.") from exc
    plain = 0
    chunks = 0
    try:
        with _translated(f"writing {out.name}"), private_file(out, exclusive=True) as ofd:
            chunks, plain = _encrypt_stream(sfd, ofd, header, key, write, progress)
    finally:
        os.close(sfd)
    _catalog(hierarchy, header, out, plain)
    return BackupInfo(
        path=str(out),
        file_id=header.file_id.hex(),
        kek_version=kek_v,
        chunk_size=chunk_size,
        chunks=chunks,
        plaintext_bytes=plain,
    )


def _encrypt_stream(
    sfd: int,
    ofd: int,
    header: bf.Header,
    key: bytes,
    write: Write,
    progress: Callable[[int], None] | None,
) -> tuple[int, int]:
    write_all(ofd, header.to_bytes(), write)
    aead = AESGCM(key)
    aad = header.digest
    cs = header.chunk_size
    cur = os.read(sfd, cs)
    i = 0
    total = 0
    while True:
        nxt = os.read(sfd, cs) if len(cur) == cs else b""
        last = not nxt
        write_all(ofd, aead.encrypt(bf.nonce(header.prefix, i, last), cur, aad), write)
        total += len(cur)
        if progress:
            progress(len(cur))
        i += 1
        if last:
            return i, total
        cur = nxt


def verify(
    hierarchy: KeyHierarchy, path: Path, progress: Callable[[int], None] | None = None
) -> BackupInfo:
    """Check every chunk of a backup (and that its tail is the real end).

    Raises:
        IntegrityError: tampered, truncated, reordered or swapped. StorageError: unreadable.
    """
    path = Path(path).resolve()
    recover(hierarchy)
    fd = open_backup(path)
    try:
        header = read_header(fd)
        key = backup_key(hierarchy, header)
        chunks = plain = 0
        for _i, _last, pt in iter_chunks(fd, header, key):
            chunks += 1
            plain += len(pt)
            if progress:
                progress(len(pt))
    finally:
        os.close(fd)
    _catalog(hierarchy, header, path, plain)
    return _info(path, header, chunks, plain)


def restore(
    hierarchy: KeyHierarchy, path: Path, out: Path, progress: Callable[[int], None] | None = None
) -> BackupInfo:
    """Decrypt a backup to *out*; *out* appears only once every chunk has verified.

    Raises:
        UsageError: *out* exists. IntegrityError: the backup fails to verify (no output is
        left). StorageError: I/O failure or disk full (no output is left).
    """
    path, out = Path(path).resolve(), Path(out)
    if out.exists():
        raise UsageError(f"{out} already exists", "Choose another --out; nothing was changed.")
    recover(hierarchy)
    fd = open_backup(path)
    try:
        with _translated(f"restoring to {out.name}"):
            header = read_header(fd)
            key = backup_key(hierarchy, header)
            chunks = plain = 0
            with private_file(out, exclusive=True) as ofd:
                for _i, _last, pt in iter_chunks(fd, header, key):
                    write_all(ofd, pt)
                    chunks += 1
                    plain += len(pt)
                    if progress:
                        progress(len(pt))
    finally:
        os.close(fd)
    return _info(path, header, chunks, plain)


# ------------------------------------------------------------------ header rewrap
def _journal_path(hierarchy: KeyHierarchy) -> Path:
    return hierarchy.store.path.parent / JOURNAL_NAME


def recover(hierarchy: KeyHierarchy) -> int:
    """Finish an interrupted header rewrap by replaying its journal, then remove it.

    A torn journal (bad checksum) means no header was touched yet; it is just removed.

    Returns:
        How many headers were (re)written.

    Raises:
        StorageError: a file could not be rewritten (the journal is kept for a retry).
    """
    jp = _journal_path(hierarchy)
    try:
        raw = jp.read_bytes()
    except FileNotFoundError:
        return 0
    body, _, check = raw.rpartition(b"\n")
    if hashlib.sha256(body).hexdigest().encode() != check:
        jp.unlink(missing_ok=True)
        return 0
    entries = json.loads(body)
    home = _home_of(hierarchy)
    done = _apply(
        hierarchy, [(home.resolve(e["path"]), bytes.fromhex(e["header"])) for e in entries]
    )
    jp.unlink(missing_ok=True)
    return done


def _apply(hierarchy: KeyHierarchy, entries: list[tuple[Path, bytes]]) -> int:
    done = 0
    cat = []
    for path, hdr in entries:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise storage_error(exc, f"rewriting the header of {path.name}") from exc
        try:
            if os.pread(fd, bf.FIXED_LEN, 0) == hdr[: bf.FIXED_LEN]:
                os.pwrite(fd, hdr, 0)
                os.fdatasync(fd)
                h = bf.parse_header(hdr)
                cat.append((h.file_id, h.kek_version, iso(hierarchy.clock())))
                done += 1
        except OSError as exc:
            raise storage_error(exc, f"rewriting the header of {path.name}") from exc
        finally:
            os.close(fd)
    hierarchy.store.recatalog_backups(cat)
    return done


def rewrap(hierarchy: KeyHierarchy, paths: Iterable[Path]) -> list[BackupInfo]:
    """Header-only re-key: reseal each backup's key under the current backup KEK, in O(1).

    The chunks are not touched (their AAD binds only the fixed header). All new headers are
    journalled and fsynced once, then written in place; a crash is repaired by :func:`recover`.

    Returns:
        One :class:`BackupInfo` per file (``chunks``/``plaintext_bytes`` are 0: not read).

    Raises:
        IntegrityError: a header fails to verify. StorageError: I/O failure (the journal
        makes the batch complete on the next run). UsageError: a file is not readable.
    """
    recover(hierarchy)
    cur = hierarchy.current_kek(bf.BRANCH).version
    kek_new = hierarchy.kek_plaintext(bf.BRANCH, cur, for_encrypt=True)
    entries: list[tuple[Path, bytes]] = []
    infos = []
    for p in paths:
        path = Path(p).resolve()
        try:
            with open(path, "rb") as fh:
                header = bf.parse_header(fh.read(4096))
        except OSError as exc:
            raise UsageError(
                f"Cannot read {path}", f"{exc.strerror}; nothing was changed."
            ) from exc
        if header.kek_version != cur:
            key = backup_key(hierarchy, header)
            new = bf.wrap_key(header, kek_new, cur, key)
            if new.length != header.length:
                raise IntegrityError("A rewrapped header changed size", "Report this bug.")
            entries.append((path, new.to_bytes()))
        infos.append(
            BackupInfo(
                path=str(path),
                file_id=header.file_id.hex(),
                kek_version=cur,
                chunk_size=header.chunk_size,
                chunks=0,
                plaintext_bytes=0,
            )
        )
    if entries:
        home = _home_of(hierarchy)
        body = json.dumps([{"path": home.rel(p), "header": h.hex()} for p, h in entries]).encode()
        jp = _journal_path(hierarchy)
        try:
            with open(jp, "wb") as fh:
                fh.write(body + b"\n" + hashlib.sha256(body).hexdigest().encode())
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(jp.parent)
        except OSError as exc:
            jp.unlink(missing_ok=True)
            raise storage_error(exc, "writing the rewrap journal") from exc
        _apply(hierarchy, entries)
        jp.unlink(missing_ok=True)
    return infos

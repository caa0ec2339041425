"""Full re-encryption of a backup into a new per-backup key, resumable after a crash.

Used after a suspected compromise of a backup key. The new file ``FILE.rekey-tmp`` gets a
new random key and nonce prefix (the same file id and chunk size, so chunk *i* maps to chunk
*i*). Every ``checkpoint_bytes`` the temp file is ``fdatasync``-ed and only *then* the
sidecar ``FILE.rekey-state`` records how many chunks are durable (written to a temp name,
fsynced, renamed). A resumed run truncates the temp file to that many chunks and carries on.
When all chunks are written, the temp file is fsynced, verified in full (every chunk
decrypts under the new key, and the final-chunk flag is where it must be), and only then
renamed over the original, followed by a directory fsync. The original is never modified
before that rename.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custody import backup_format as bf
from custody.backup import (
    BackupInfo,
    Write,
    _catalog,
    backup_key,
    fsync_dir,
    iter_chunks,
    read_exact,
    read_header,
    recover,
    storage_error,
    write_all,
)
from custody.errors import IntegrityError, PolicyError, StorageError
from custody.hierarchy import KeyHierarchy

DEFAULT_CHECKPOINT = 64 << 20
_NBUF = 4


def _paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".rekey-tmp"), path.with_name(path.name + ".rekey-state")


def _write_state(state: Path, doc: dict[str, object]) -> None:
    tmp = state.with_name(state.name + ".new")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, state)


def _resume_point(hierarchy: KeyHierarchy, src: bf.Header, tmp: Path,
                  state: Path) -> tuple[bf.Header, bytes, int] | None:
    """The temp file's header, key and durable chunk count, if a matching resume exists."""
    try:
        doc = json.loads(state.read_text(encoding="utf-8"))
        if doc.get("src_digest") != src.digest.hex() or not tmp.exists():
            return None
        fd = os.open(tmp, os.O_RDONLY)
        try:
            hdr = read_header(fd)
        finally:
            os.close(fd)
        if hdr.digest.hex() != doc.get("tmp_digest"):
            return None
        return hdr, backup_key(hierarchy, hdr), int(doc["chunks_done"])
    except (OSError, ValueError, KeyError, IntegrityError, PolicyError):
        return None  # no usable checkpoint: start over (the original is untouched)


def rekey_full(hierarchy: KeyHierarchy, path: Path, *, checkpoint_bytes: int = DEFAULT_CHECKPOINT,
               write: Write = os.write, progress: Callable[[int], None] | None = None,
               verify: bool = True) -> tuple[BackupInfo, int]:
    """Re-encrypt *path* chunk by chunk into a new key; resume a previous attempt if any.

    Args:
        hierarchy: opened with the HSM (the backup KEKs are unwrapped through it once).
        path: the backup to re-encrypt; replaced atomically at the end.
        checkpoint_bytes: durable checkpoint interval.
        write: ``os.write`` (tests inject failures, e.g. ENOSPC).
        progress: called with plaintext bytes processed (resumed chunks count at once).
        verify: verify the new file in full before the rename (leave on outside benchmarks).

    Returns:
        ``(info about the new file, chunk index the run resumed from)``.

    Raises:
        IntegrityError: the original fails to verify (nothing changes) or the new file does
        (it is discarded). StorageError: disk full or I/O error (the original is untouched,
        the checkpoint is kept: run again to resume). PolicyError, HsmError.
    """
    path = Path(path).resolve()
    recover(hierarchy)
    tmp, state = _paths(path)
    try:
        sfd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise storage_error(exc, f"opening {path.name}") from exc
    try:
        src = read_header(sfd)
        key_old = backup_key(hierarchy, src)
        size = os.fstat(sfd).st_size
        n = bf.chunk_count(size - src.length, src.chunk_size)
        resume = _resume_point(hierarchy, src, tmp, state)
        if resume is None:
            cur = hierarchy.current_kek(bf.BRANCH).version
            key_new = os.urandom(32)
            new = bf.wrap_key(bf.new_header(src.chunk_size, file_id=src.file_id),
                              hierarchy.kek_plaintext(bf.BRANCH, cur, for_encrypt=True), cur,
                              key_new)
            start = 0
        else:
            new, key_new, start = resume
        try:
            _stream(sfd, src, key_old, n, size, tmp, state, new, key_new, start,
                    checkpoint_bytes, write, progress)
            if verify:
                _verify_tmp(tmp, new, key_new)
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            raise storage_error(exc, f"re-encrypting {path.name}") from exc
    finally:
        os.close(sfd)
    state.unlink(missing_ok=True)
    plain = size - src.length - n * bf.TAG
    _catalog(hierarchy, new, path, plain)
    info = BackupInfo(path=str(path), file_id=new.file_id.hex(), kek_version=new.kek_version,
                      chunk_size=new.chunk_size, chunks=n, plaintext_bytes=plain)
    return info, start


def _stream(sfd: int, src: bf.Header, key_old: bytes, n: int, size: int, tmp: Path,
            state: Path, new: bf.Header, key_new: bytes, start: int, checkpoint_bytes: int,
            write: Write, progress: Callable[[int], None] | None) -> None:
    step = src.chunk_size + bf.TAG
    dec, enc = AESGCM(key_old), AESGCM(key_new)
    aad_old, aad_new = src.digest, new.digest
    doc = {"src_digest": src.digest.hex(), "tmp_digest": new.digest.hex(), "chunks_done": start}
    ofd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if start == 0:
            os.ftruncate(ofd, 0)
            write_all(ofd, new.to_bytes(), write)
            os.fdatasync(ofd)
            _write_state(state, doc)
        else:
            os.ftruncate(ofd, new.length + start * step)
            if progress:
                progress(start * src.chunk_size)
        os.lseek(ofd, new.length + start * step, os.SEEK_SET)
        ct = bytearray(step)
        pt = bytearray(src.chunk_size)
        outs = [bytearray(step) for _ in range(_NBUF)]
        busy: list[Future[None] | None] = [None] * _NBUF
        checkpoints: list[Future[None]] = []
        since = 0
        # One writer thread overlaps writes and checkpoint fdatasyncs with reading and
        # crypto; it runs tasks in submission order, so a checkpoint covers every chunk
        # submitted before it.
        with ThreadPoolExecutor(max_workers=1) as writer:
            for i in range(start, n):
                off = src.length + i * step
                clen = min(step, size - off)
                cv = memoryview(ct)[:clen]
                read_exact(sfd, cv, off)
                last = i == n - 1
                pv = memoryview(pt)[:clen - bf.TAG]
                try:
                    dec.decrypt_into(bf.nonce(src.prefix, i, last), cv, aad_old, pv)
                except InvalidTag as exc:
                    raise bf._bad(f"chunk {i} of {n} failed to verify; nothing was replaced") from exc
                slot = i % _NBUF
                prev = busy[slot]
                if prev is not None:
                    prev.result()  # the buffer is free again (re-raises a write error)
                ov = memoryview(outs[slot])[:clen]
                enc.encrypt_into(bf.nonce(new.prefix, i, last), pv, aad_new, ov)
                busy[slot] = writer.submit(write_all, ofd, ov, write)
                since += clen
                if progress:
                    progress(len(pv))
                if since >= checkpoint_bytes and not last:
                    checkpoints.append(writer.submit(_checkpoint, ofd, state, dict(doc), i + 1))
                    since = 0
                while checkpoints and checkpoints[0].done():
                    checkpoints.pop(0).result()
            for f in [*busy, *checkpoints]:
                if f is not None:
                    f.result()
        os.fsync(ofd)
    finally:
        os.close(ofd)


def _checkpoint(ofd: int, state: Path, doc: dict[str, object], done: int) -> None:
    os.fdatasync(ofd)
    doc["chunks_done"] = done
    _write_state(state, doc)


def _verify_tmp(tmp: Path, new: bf.Header, key_new: bytes) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        if read_header(fd).to_bytes() != new.to_bytes():
            raise StorageError("The re-encrypted file's header is wrong",
                               "It was discarded; run the command again.")
        for _ in iter_chunks(fd, new, key_new):
            pass
    except IntegrityError:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


"""Full re-encryption of a backup into a new per-backup key, resumable after a crash.

Used after a suspected compromise of a backup key. The new file ``FILE.rekey-tmp`` gets a
new random key and nonce prefix (the same file id and chunk size, so chunk *i* maps to chunk
*i* at the same offset). The original is never written; it is replaced by one ``rename``
once the new file is known good. The argument is spelled out in ``docs/backups.md``:

* every *source* chunk is authenticated (GCM tag, STREAM nonce) before its plaintext is
  re-encrypted;
* every *new* chunk is authenticated from memory before it is handed to ``write``: it is
  decrypted under the new key with the index and final-chunk flag derived afresh from the
  file offset it is about to be written at, so a framing bug or a corrupted buffer fails
  here instead of after the rename;
* chunks a resumed run inherits from a killed one are re-read and authenticated from disk
  before the run continues (paid only on resume);
* after the final ``fsync`` the header is read back and compared, the size is checked
  against the framing, and the first and last chunks are authenticated from disk.

A full read-back of the new file is not done: right after the write it would be served from
the page cache, i.e. it would re-check the very buffers checked above, not the medium.

Durability: a checkpoint sidecar ``FILE.rekey-state`` records how many chunks are durable.
It is written (temp name, fsync, rename) only after an ``fdatasync`` of the temp file that
started after every one of those chunks had been written. Checkpoints run on their own
thread, so reading, crypto and writing never wait for them. A resumed run truncates the
temp file to the recorded count and carries on.

I/O: whole-chunk windows of about :data:`WINDOW` bytes, read ahead on one thread, written
behind on another (one ``write`` per window), with crypto on the calling thread
(``AESGCM`` releases the GIL). Source pages are dropped from the page cache as they are
consumed and writeback of the new file is started early with ``posix_fadvise``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custody.backup import format as bf
from custody.backup.archive import (
    BackupInfo,
    Write,
    _catalog,
    backup_key,
    fsync_dir,
    open_backup,
    read_exact,
    read_header,
    recover,
    storage_error,
    write_all,
)
from custody.backup.sidecar import Sidecar, read_state
from custody.errors import IntegrityError, PolicyError, StorageError
from custody.keys.hierarchy import KeyHierarchy

DEFAULT_CHECKPOINT = 256 << 20
CHECKPOINT_SECONDS = 5.0
WINDOW = 4 << 20
_DEPTH = 3

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".rekey-tmp"), path.with_name(path.name + ".rekey-state")


def _advise(fd: int, offset: int, length: int, advice: int) -> None:
    """Best-effort page-cache hint (some filesystems refuse it; correctness never depends on it)."""
    if length > 0:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, advice)


def _resume_point(
    hierarchy: KeyHierarchy, src: bf.Header, tmp: Path, state: Path
) -> tuple[bf.Header, bytes, int, dict[str, object]] | None:
    """The temp file's header, key and durable chunk count, if a matching resume exists.

    The inherited chunks are authenticated from disk under the new key; any doubt means
    starting over (with a fresh key), which is always safe because the original is untouched.
    """
    try:
        doc = read_state(state)
        if doc is None or doc.get("src_digest") != src.digest.hex() or not tmp.exists():
            return None
        fd = os.open(tmp, os.O_RDONLY)
        try:
            hdr = read_header(fd)
            if hdr.digest.hex() != doc.get("tmp_digest") or hdr.chunk_size != src.chunk_size:
                return None
            key = backup_key(hierarchy, hdr)
            done = int(str(doc["chunks_done"]))
            _check_prefix(fd, hdr, key, done)
        finally:
            os.close(fd)
        return hdr, key, done, doc
    except (OSError, ValueError, KeyError, IntegrityError, PolicyError):
        return None


def _check_prefix(fd: int, hdr: bf.Header, key: bytes, done: int) -> None:
    """Authenticate chunks ``0 .. done-1`` of a temp file (none of them is the last).

    Raises:
        IntegrityError: a chunk is missing or fails.
    """
    step = hdr.chunk_size + bf.TAG
    if done < 0 or os.fstat(fd).st_size < hdr.length + done * step:
        raise bf._bad("re-key checkpoint claims more than the temp file holds")
    aead, aad = AESGCM(key), hdr.digest
    per = max(1, WINDOW // step)
    buf = bytearray(per * step)
    pt = bytearray(hdr.chunk_size)
    for first in range(0, done, per):
        count = min(per, done - first)
        view = memoryview(buf)[: count * step]
        read_exact(fd, view, hdr.length + first * step)
        for k in range(count):
            try:
                aead.decrypt_into(
                    bf.nonce(hdr.prefix, first + k, False), view[k * step : (k + 1) * step], aad, pt
                )
            except InvalidTag as exc:
                raise bf._bad(f"re-key temp chunk {first + k} failed to verify") from exc


def rekey_full(
    hierarchy: KeyHierarchy,
    path: Path,
    *,
    checkpoint_bytes: int = DEFAULT_CHECKPOINT,
    write: Write = os.write,
    progress: Callable[[int], None] | None = None,
    window: int = WINDOW,
) -> tuple[BackupInfo, int]:
    """Re-encrypt *path* chunk by chunk into a new key; resume a previous attempt if any.

    Args:
        hierarchy: opened with the HSM (the backup KEKs are unwrapped through it once).
        path: the backup to re-encrypt; replaced atomically at the end.
        checkpoint_bytes: durable checkpoint interval (a checkpoint is also taken after
            :data:`CHECKPOINT_SECONDS` of work, whichever comes first).
        write: ``os.write`` (tests inject failures, e.g. ENOSPC).
        progress: called with plaintext bytes processed (resumed chunks count at once).
        window: bytes per read and write call (at most *checkpoint_bytes*; rounded down to
            whole chunks, at least one).

    Returns:
        ``(info about the new file, chunk index the run resumed from)``.

    Raises:
        IntegrityError: the original fails to verify (nothing changes) or a new chunk does
        (nothing is replaced). StorageError: disk full or I/O error (the original is
        untouched, the checkpoint is kept: run again to resume). PolicyError, HsmError.
    """
    path = Path(path).resolve()
    recover(hierarchy)
    tmp, state = _paths(path)
    sfd = open_backup(path)
    try:
        src = read_header(sfd)
        key_old = backup_key(hierarchy, src)
        size = os.fstat(sfd).st_size
        n = bf.chunk_count(size - src.length, src.chunk_size)
        resume = _resume_point(hierarchy, src, tmp, state)
        if resume is None:
            cur = hierarchy.current_kek(bf.BRANCH).version
            key_new = os.urandom(32)
            new = bf.wrap_key(
                bf.new_header(src.chunk_size, file_id=src.file_id),
                hierarchy.kek_plaintext(bf.BRANCH, cur, for_encrypt=True),
                cur,
                key_new,
            )
            start, doc = (
                0,
                {
                    "src_digest": src.digest.hex(),
                    "tmp_digest": new.digest.hex(),
                    "chunks_done": 0,
                    "seq": 0,
                },
            )
        else:
            new, key_new, start, doc = resume
        job = _Job(
            sfd=sfd,
            src=src,
            key_old=key_old,
            n=n,
            size=size,
            tmp=tmp,
            state=state,
            new=new,
            key_new=key_new,
            doc=doc,
            write=write,
            progress=progress,
        )
        try:
            job.run(start, checkpoint_bytes, window)
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            raise storage_error(exc, f"re-encrypting {path.name}") from exc
    finally:
        os.close(sfd)
    state.unlink(missing_ok=True)
    plain = size - src.length - n * bf.TAG
    _catalog(hierarchy, new, path, plain)
    info = BackupInfo(
        path=str(path),
        file_id=new.file_id.hex(),
        kek_version=new.kek_version,
        chunk_size=new.chunk_size,
        chunks=n,
        plaintext_bytes=plain,
    )
    return info, start


class _Job:
    """One pass of the re-encryption pipeline (read-ahead thread, crypto here, write-behind)."""

    def __init__(
        self,
        *,
        sfd: int,
        src: bf.Header,
        key_old: bytes,
        n: int,
        size: int,
        tmp: Path,
        state: Path,
        new: bf.Header,
        key_new: bytes,
        doc: dict[str, object],
        write: Write,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.sfd, self.src, self.n, self.size = sfd, src, n, size
        self.tmp, self.state, self.new, self.write, self.progress = tmp, state, new, write, progress
        self.dec, self.enc = AESGCM(key_old), AESGCM(key_new)
        self.step = src.chunk_size + bf.TAG
        self.total = new.length + (size - src.length)  # the new file's exact size
        self.doc = doc
        self.sidecar: Sidecar | None = None
        self.scratch = bytearray(src.chunk_size)
        self.ofd = -1

    def run(self, start: int, checkpoint_bytes: int, window: int) -> None:
        """Write chunks ``start..n-1``, fsync, and check the result; the caller renames.

        Raises:
            IntegrityError, OSError.
        """
        new = self.new
        # resumable on purpose (the same name across runs), but never through a link
        self.ofd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | _O_NOFOLLOW, 0o600)
        try:
            if start == 0:
                os.ftruncate(self.ofd, 0)
                write_all(self.ofd, new.to_bytes(), self.write)
                os.fdatasync(self.ofd)
                self.sidecar = Sidecar(self.state, self.doc, fresh=True)
            else:
                self.sidecar = Sidecar(self.state, self.doc, fresh=False)
                os.ftruncate(self.ofd, new.length + start * self.step)
                if self.progress:
                    self.progress(start * self.src.chunk_size)
            os.lseek(self.ofd, new.length + start * self.step, os.SEEK_SET)
            _advise(
                self.sfd, self.src.length, self.size - self.src.length, os.POSIX_FADV_SEQUENTIAL
            )
            # Whole chunks per window, sized so that windows tile a checkpoint interval.
            every = max(1, -(-checkpoint_bytes // self.step))
            per = -(-every // -(-every // max(1, window // self.step)))
            self._pipeline(start, every * self.step, per)
            os.fsync(self.ofd)
        finally:
            os.close(self.ofd)
            if self.sidecar is not None:
                self.sidecar.close()
        try:
            self._check_file()
        except (IntegrityError, StorageError):
            # Not known good: discard it, so the next run starts over with a fresh key.
            self.tmp.unlink(missing_ok=True)
            self.state.unlink(missing_ok=True)
            raise

    def _pipeline(self, start: int, checkpoint_bytes: int, per: int) -> None:
        step, n = self.step, self.n
        batches = [(i, min(per, n - i)) for i in range(start, n, per)]
        depth = min(_DEPTH, len(batches))
        ins = [bytearray(per * step) for _ in range(depth)]
        outs = [bytearray(per * step) for _ in range(depth)]
        writes: list[Future[None] | None] = [None] * depth
        ckpt: Future[None] | None = None
        since, t_ckpt = 0, time.monotonic()
        reader = ThreadPoolExecutor(1, thread_name_prefix="backup-read")
        writer = ThreadPoolExecutor(1, thread_name_prefix="backup-write")
        syncer = ThreadPoolExecutor(1, thread_name_prefix="backup-sync")
        try:
            reads = deque(reader.submit(self._read, ins[j], *batches[j]) for j in range(depth))
            for b, (first, count) in enumerate(batches):
                slot = b % depth
                length = reads.popleft().result()
                prev = writes[slot]
                if prev is not None:
                    prev.result()  # the output buffer is free again (re-raises a write error)
                out = memoryview(outs[slot])[:length]
                self._crypt(memoryview(ins[slot])[:length], out, first)
                if b + depth < len(batches):
                    reads.append(reader.submit(self._read, ins[slot], *batches[b + depth]))
                offset = self.new.length + first * step
                self._check_out(out, offset)  # before the bytes leave this process
                writes[slot] = wrote = writer.submit(self._write, out, offset)
                if self.progress:
                    self.progress(length - count * bf.TAG)
                since += length
                done = first + count
                due = since >= checkpoint_bytes or time.monotonic() - t_ckpt >= CHECKPOINT_SECONDS
                if due and done < n and (ckpt is None or ckpt.done()):
                    if ckpt is not None:
                        ckpt.result()
                    ckpt = syncer.submit(self._checkpoint, wrote, done)
                    since, t_ckpt = 0, time.monotonic()
            for f in [*writes, ckpt]:
                if f is not None:
                    f.result()
        finally:
            reader.shutdown(wait=True, cancel_futures=True)
            writer.shutdown(wait=True, cancel_futures=True)
            syncer.shutdown(wait=True)  # a checkpoint already asked for still lands

    def _read(self, buf: bytearray, first: int, count: int) -> int:
        off = self.src.length + first * self.step
        length = min(count * self.step, self.size - off)
        read_exact(self.sfd, memoryview(buf)[:length], off)
        # Drop what was consumed (whole pages only): spares the page cache, and the cost of
        # freeing it moves off the critical path at close.
        _advise(self.sfd, 0, (off + length) & ~4095, os.POSIX_FADV_DONTNEED)
        return length

    def _crypt(self, inv: memoryview, out: memoryview, first: int) -> None:
        """Authenticate and decrypt each source chunk, then encrypt it under the new key."""
        src, new, step = self.src, self.new, self.step
        aad_old, aad_new = src.digest, new.digest
        pt = memoryview(self.scratch)
        for pos in range(0, len(inv), step):
            i = first + pos // step
            last = i == self.n - 1
            cv = inv[pos : pos + step]
            pv = pt[: len(cv) - bf.TAG]
            try:
                self.dec.decrypt_into(bf.nonce(src.prefix, i, last), cv, aad_old, pv)
            except InvalidTag as exc:
                raise bf._bad(
                    f"chunk {i} of {self.n} failed to verify; nothing was replaced"
                ) from exc
            self.enc.encrypt_into(bf.nonce(new.prefix, i, last), pv, aad_new, out[pos : pos + step])

    def _check_out(self, out: memoryview, offset: int) -> None:
        """Authenticate new ciphertext about to be written at *offset*, framing from the offset.

        Raises:
            IntegrityError: a chunk does not decrypt as the chunk that belongs there.
        """
        new, step = self.new, self.step
        pt = memoryview(self.scratch)
        for pos in range(0, len(out), step):
            at = offset + pos - new.length
            i, rem = divmod(at, step)
            clen = min(step, self.total - (offset + pos))
            if rem or clen < bf.TAG or pos + clen > len(out):
                raise IntegrityError(
                    "The re-encrypted file's framing is wrong",
                    "Nothing was replaced; report this bug.",
                )
            last = offset + pos + clen == self.total
            try:
                self.enc.decrypt_into(
                    bf.nonce(new.prefix, i, last),
                    out[pos : pos + clen],
                    new.digest,
                    pt[: clen - bf.TAG],
                )
            except InvalidTag as exc:
                raise IntegrityError(
                    f"Re-encrypted chunk {i} failed to verify before writing",
                    "Nothing was replaced; run the command again.",
                ) from exc

    def _write(self, out: memoryview, offset: int) -> None:
        write_all(self.ofd, out, self.write)
        # Start writeback of this window now (POSIX_FADV_DONTNEED writes dirty pages back
        # asynchronously), so the checkpoints and the final fsync find little left to do.
        _advise(self.ofd, offset, len(out), os.POSIX_FADV_DONTNEED)

    def _checkpoint(self, upto: Future[None], done: int) -> None:
        # The writer runs in submission order: once *upto* is done, chunks 0..done-1 have been
        # written, and an fdatasync that starts now makes them durable before the sidecar says so.
        upto.result()
        os.fdatasync(self.ofd)
        if self.sidecar is not None:
            self.sidecar.save(done)

    def _check_file(self) -> None:
        """After the fsync: header, size and the first and last chunks, read from disk.

        Raises:
            IntegrityError, OSError.
        """
        new, step = self.new, self.step
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            if os.pread(fd, new.length, 0) != new.to_bytes() or os.fstat(fd).st_size != self.total:
                raise StorageError(
                    "The re-encrypted file's header or size is wrong",
                    "Nothing was replaced; run the command again.",
                )
            for i in sorted({0, self.n - 1}):
                off = new.length + i * step
                ct = bytearray(min(step, self.total - off))
                read_exact(fd, memoryview(ct), off)
                try:
                    self.enc.decrypt(
                        bf.nonce(new.prefix, i, i == self.n - 1), bytes(ct), new.digest
                    )
                except InvalidTag as exc:
                    raise IntegrityError(
                        f"Re-encrypted chunk {i} failed to verify on disk",
                        "Nothing was replaced; run the command again.",
                    ) from exc
        finally:
            os.close(fd)

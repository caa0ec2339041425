"""The one way custody writes a file that holds (or may hold) secret material.

Shares, share cards, sealed shares, participants' private keys, offer keys, restored
backups, PIN and passphrase files: every one goes through :func:`write_private` (bytes) or
:func:`private_file` (a stream, for backups). The same writer also serves the public files
written beside them (envelopes, ``.pub.json``, offers), with ``mode=PUBLIC``, so that no
output path can be redirected.

How a file is written, and why:

1. The content goes to a fresh temporary name in the target's own directory,
   ``.NAME.<random>.tmp``, opened with ``O_CREAT|O_EXCL|O_NOFOLLOW`` and mode 0600 from the
   first instant (then ``fchmod`` to the requested mode). A leftover ``.tmp`` from a crash,
   or a symbolic link planted at any name an attacker can guess, can neither receive the
   content nor widen its mode: ``O_EXCL`` refuses any existing name, links included.
2. The data is written in full and ``fsync``-ed.
3. The temporary file is renamed onto the target (``rename(2)`` replaces the name; it
   never follows a link at the target), or hard-linked to it when the target must not
   already exist (``exclusive=True``; ``link(2)`` fails on any existing name). The
   directory is then ``fsync``-ed, so after a crash the target holds the old content or the
   new, never half of it.
4. A target that is already a symbolic link, or not a regular file, is refused before
   anything is written: a planted link is a sign of tampering, and silently replacing it
   would hide that.

Directories that custody creates for such files are made with :func:`private_dir` (0700).
An existing output directory that others can write to (group- or world-writable, without
the sticky bit) is refused, since anyone who can write to it could rename our file away
and put their own in its place.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from custody.errors import StorageError, UsageError

PRIVATE = 0o600
PUBLIC = 0o644
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _storage(exc: OSError, what: str) -> StorageError:
    return StorageError(
        f"Cannot write {what}: {exc.strerror or type(exc).__name__}",
        "Check the directory exists and is writable; nothing was written.",
    )


def check_output_dir(path: Path) -> None:
    """Refuse an output directory that is a link to elsewhere or writable by others.

    Raises:
        StorageError: *path* is missing, not a directory, or group/world-writable without
            the sticky bit.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _storage(exc, str(path)) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"{path} is not a directory", "Give a directory for the output.")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise StorageError(
            f"Output directory {path} can be written by other users",
            f"Run 'chmod 700 {path}', or choose a private directory; nothing was written.",
        )


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create *path* (and missing parents) as a 0700 directory, or check an existing one.

    The last component is created with mode 0700 (``chmod`` after ``mkdir``, so the umask
    cannot widen or narrow it). An existing directory is kept as it is, but refused when
    others can write to it (:func:`check_output_dir`).

    Returns:
        The directory's path.

    Raises:
        StorageError: it cannot be created, is not a directory, or others can write to it.
    """
    p = Path(path)
    try:
        if not p.is_dir():
            p.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(p, 0o700)
            os.chmod(p, 0o700)
    except FileExistsError:
        pass  # created meanwhile, or a non-directory: check_output_dir says which
    except OSError as exc:
        raise _storage(exc, str(p)) from exc
    check_output_dir(p)
    return p


def check_target(path: Path) -> None:
    """Refuse a target that is a symbolic link or not a regular file (a missing one is fine).

    Raises:
        StorageError: *path* is a link, a directory, a device...
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _storage(exc, str(path)) from exc
    if stat.S_ISLNK(st.st_mode):
        raise StorageError(
            f"{path} is a symbolic link",
            "custody never writes through a link; remove it and check who planted it. "
            "Nothing was written.",
        )
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(f"{path} is not a regular file", "Choose another output path.")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    except OSError:
        return  # not every platform can open a directory; the rename is still atomic
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, path: Path, *, exclusive: bool) -> None:
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise UsageError(
            f"{path} already exists", "Nothing was changed; choose another path."
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A file system without hard links: the next best no-clobber rename.
        if os.path.lexists(path):
            raise UsageError(
                f"{path} already exists", "Nothing was changed; choose another path."
            ) from exc
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@contextmanager
def private_file(
    path: str | os.PathLike[str], *, mode: int = PRIVATE, exclusive: bool = False
) -> Iterator[int]:
    """Yield the descriptor of a fresh temporary file that becomes *path* on success.

    On a normal exit the file is ``fsync``-ed and renamed onto *path* (see the module
    docstring); on any exception the temporary file is removed and nothing changes at
    *path*. OSErrors raised inside the ``with`` body pass through unchanged, so a caller
    can translate them (disk full) in its own words.

    Args:
        path: the final name; its directory must exist.
        mode: the file's permission bits (:data:`PRIVATE` unless the content is public).
        exclusive: refuse to replace an existing *path* (checked atomically at the end).

    Yields:
        A writable file descriptor (close-on-exec).

    Raises:
        StorageError: *path* is a symbolic link or not a regular file, or the temporary
            file cannot be created.
        UsageError: *exclusive* and *path* already exists.
        OSError: from the body, or from the final fsync or rename.
    """
    target = Path(path)
    check_target(target)
    if exclusive and os.path.lexists(target):
        raise UsageError(f"{target} already exists", "Nothing was changed; choose another path.")
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
    try:
        fd = os.open(tmp, flags, PRIVATE)
    except OSError as exc:
        raise _storage(exc, str(target)) from exc
    published = False
    try:
        try:
            os.fchmod(fd, mode)
            yield fd
            os.fsync(fd)
        finally:
            os.close(fd)
        check_target(target)
        _publish(tmp, target, exclusive=exclusive)
        published = True
    finally:
        if not published:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
    _fsync_dir(target.parent)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of *data* to *fd* (``os.write`` may write less)."""
    mv = memoryview(data)
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]


def write_private(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = PRIVATE,
    exclusive: bool = False,
) -> Path:
    """Write *data* to *path* atomically, never through a link, 0600 from the start.

    Args:
        path: the final name; its directory must exist (see :func:`private_dir`).
        data: the whole content.
        mode: :data:`PRIVATE` (0600, the default) or :data:`PUBLIC` (0644) for a public file.
        exclusive: refuse to replace an existing file.

    Returns:
        *path* as a ``Path``.

    Raises:
        StorageError: the file cannot be written, or *path* is a symbolic link or not a
            regular file (nothing is written).
        UsageError: *exclusive* and *path* exists.
    """
    target = Path(path)
    try:
        with private_file(target, mode=mode, exclusive=exclusive) as fd:
            write_all(fd, data)
    except OSError as exc:
        raise _storage(exc, str(target)) from exc
    return target

"""Snapshots of a SQLite store with SQLite's online backup API (``sqlite3.Connection.backup``).

:func:`snapshot` copies a live store page by page while other connections keep using it;
the copy is a consistent point-in-time database (rollback journal, no WAL), written under a
temporary name, fsynced and renamed into place. :func:`stage_restore` copies a snapshot
into a staging file beside the store, with the same API, after SQLite's integrity check;
:func:`install_restore` puts the staged file in place of the store (the old file's WAL and
shared-memory files are removed first, so they are never applied to the restored one).
Signing and checking the manifest is :mod:`ceremonies.offline`'s; this module only copies.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from custody.errors import IntegrityError, StorageError, UsageError
from custody.store.sqlite_base import storage_error


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(src: Path, dst: Path, *, readonly: bool) -> None:
    uri = f"{src.resolve().as_uri()}?mode=ro" if readonly else str(src)
    s = sqlite3.connect(uri, uri=readonly, timeout=30.0)
    try:
        d = sqlite3.connect(dst)
        try:
            s.backup(d)
            d.execute("PRAGMA journal_mode=DELETE")
        finally:
            d.close()
    finally:
        s.close()


def snapshot(db: Path, out: Path) -> int:
    """Copy the store *db* to the new file *out* (online). Returns its size in bytes.

    Raises:
        UsageError: *out* exists. StorageError: the copy failed.
    """
    if out.exists() or out.is_symlink():
        raise UsageError(f"{out} already exists", "Give a new --out file; nothing was written.")
    if not db.exists():
        raise StorageError(f"The store {db} does not exist", "There is nothing to snapshot.")
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _copy(db, tmp, readonly=False)
        tmp.chmod(0o600)
        _fsync(tmp)
        os.replace(tmp, out)
    except sqlite3.Error as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise storage_error(db, exc) from exc
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(f"Cannot write {out}", f"{exc.strerror or exc}.") from exc
    return out.stat().st_size


def staging_path(db: Path) -> Path:
    return db.with_name(db.name + ".restoring")


def stage_restore(snapshot_file: Path, db: Path) -> Path:
    """Copy *snapshot_file* into the staging file beside *db* and check its integrity.

    Returns:
        The staging path (open it as a store to inspect it, then :func:`install_restore`).

    Raises:
        IntegrityError: the snapshot is not a sound SQLite database.
        StorageError: the copy failed.
    """
    stage = staging_path(db)
    for p in (stage, Path(f"{stage}-wal"), Path(f"{stage}-shm")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    try:
        _copy(snapshot_file, stage, readonly=True)
        c = sqlite3.connect(stage)
        try:
            ok = c.execute("PRAGMA integrity_check").fetchone()
        finally:
            c.close()
    except sqlite3.Error as exc:
        with contextlib.suppress(OSError):
            stage.unlink()
        raise IntegrityError(
            f"{snapshot_file.name} is not a custody store snapshot",
            "Take the snapshot from another medium.",
        ) from exc
    if not ok or ok[0] != "ok":
        stage.unlink()
        raise IntegrityError(
            f"{snapshot_file.name} failed SQLite's integrity check", "Use another snapshot."
        )
    stage.chmod(0o600)
    return stage


def discard_restore(db: Path) -> None:
    for p in (staging_path(db), Path(f"{staging_path(db)}-wal"), Path(f"{staging_path(db)}-shm")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def install_restore(db: Path, *, keep_old: Path | None = None) -> None:
    """Put the staged copy in place of *db* (the old file is moved to *keep_old* if given).

    Raises:
        StorageError: the rename failed.
    """
    stage = staging_path(db)
    try:
        _fsync(stage)
        if keep_old is not None and db.exists():
            os.replace(db, keep_old)
        for p in (Path(f"{db}-wal"), Path(f"{db}-shm")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        os.replace(stage, db)
        dfd = os.open(db.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise StorageError(f"Cannot install the restored store at {db}", str(exc)) from exc
    discard_restore(db)

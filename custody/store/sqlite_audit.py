"""The audit log's own storage adapter: ``HOME/audit.db``, a separate SQLite database.

The log (:class:`custody.audit.log.AuditLog`) owns the chain, the entries' format and the
checkpoints; this adapter owns the SQL. Each batch of appends is one short ``BEGIN IMMEDIATE``
transaction that reads the chain head *inside* the transaction, so any number of writer
processes serialise on SQLite's write lock and never fork the chain (a PostgreSQL adapter
would take an advisory lock or use one sequencer transaction; docs/store.md).

Group commit. In durable mode the connection commits with ``synchronous=NORMAL`` (the WAL is
written but not fsynced inside the write lock) and :meth:`SqliteAuditStore.sync` then makes
the WAL durable with a *group flush*: it reads the durable horizon (the highest seq already
flushed, kept in ``audit.db-sync`` under a shared ``flock``) and returns at once if the
caller's seq is at or below it; otherwise it reads the newest committed seq, fdatasyncs the
WAL *outside* any lock (so the kernel folds concurrent writers' flushes into one journal
commit) and raises the horizon to that seq under an exclusive ``flock``. Writers that
committed before a flush began find themselves covered and return without one of their
own, so one flush serves every writer, thread or process, that committed before it. The
write transaction itself is serialised by a blocking ``flock`` on ``audit.db-lock``
(kernel-woken), so writers queue instead of sleeping in SQLite's busy handler; SQLite's own
lock remains what guarantees exclusion.

Every :mod:`sqlite3` error is raised as :class:`AuditStoreError` (a StorageError), with the
driver's error as its ``__cause__``.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any

from custody.errors import StorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries(seq INTEGER PRIMARY KEY, line BLOB NOT NULL, chain BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints(tree_size INTEGER PRIMARY KEY, line BLOB NOT NULL);
"""  # noqa: E501 - kept verbatim: SQLite stores this text in sqlite_master

_SEALS = "CREATE TABLE IF NOT EXISTS seals(seq INTEGER PRIMARY KEY, mac BLOB NOT NULL)"
"""Seals of the chain (HMAC under a token key), one per sealed batch; added beside the
original schema on first use, so older audit databases need no migration."""

Head = tuple[int, bytes] | None
"""``(seq, chain hash)`` of the newest entry, or ``None`` for an empty log."""

Row = tuple[int, bytes, bytes]
"""``(seq, line, chain hash)`` of one entry to insert."""

_HORIZON_LEN = 8 + 64  # signed 64-bit horizon seq, then the log id it belongs to (ASCII)


class AuditStoreError(StorageError):
    """The audit database could not be read or written."""


def _err(path: Path, exc: sqlite3.Error) -> AuditStoreError:
    return AuditStoreError(
        f"The audit database {path.name} failed ({type(exc).__name__})",
        "Check the path, permissions, locks and free space.",
    )


def _b(v: Any) -> bytes:
    """A stored line as bytes (a hand-edited TEXT value still verifies as its UTF-8)."""
    return v.encode() if isinstance(v, str) else bytes(v)


class SqliteAuditStore:
    """One connection to an audit database (use one per thread or process).

    Args:
        path: the database file.
        durable: every append is flushed (:meth:`sync`) before it returns; False only for
            scratch logs.
        timeout: seconds to wait for another writer's lock.
        new_log_id: makes the log id of a new database.

    Raises:
        AuditStoreError: it cannot be opened or initialised.
    """

    def __init__(
        self, path: Path, *, durable: bool, timeout: float, new_log_id: Callable[[], str]
    ) -> None:
        self.path = path
        self.durable = durable
        self._timeout = timeout
        self._wal_fd = -1
        self._old_fds: list[int] = []
        self._lock_fd = self._sync_fd = -1
        self._sync_mutex = threading.Lock()  # flock does not exclude threads sharing an fd
        self._top: sqlite3.Connection | None = None  # sync()'s own reader (see there)
        try:
            self._db = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: commits are not fsynced inside the write lock; sync() flushes the WAL
            # for a whole group of commits before any of their callers returns.
            self._db.execute("PRAGMA synchronous=NORMAL")
            row = self._db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone()
            if (
                row is None
                or self._db.execute("SELECT 1 FROM meta WHERE k='log_id'").fetchone() is None
            ):
                self._db.executescript(_SCHEMA)  # idempotent
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('log_id', ?)", (new_log_id(),))
                self._db.execute("COMMIT")
            self.log_id = str(self._db.execute("SELECT v FROM meta WHERE k='log_id'").fetchone()[0])
        except sqlite3.Error as exc:
            raise _err(path, exc) from exc
        try:
            self._lock_fd = _open_lock(Path(f"{path}-lock"))
            self._sync_fd = _open_lock(Path(f"{path}-sync"))
            if durable:
                self._clamp_horizon()
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise AuditStoreError(
                f"The audit database's lock files beside {path.name} cannot be opened",
                "Check the directory's permissions and free space.",
            ) from exc

    def _clamp_horizon(self) -> None:
        """A horizon above the newest entry (a database restored or rolled back beside a
        newer ``-sync`` file) would let new entries skip their flush: lower it."""
        with _flocked(self._sync_fd, fcntl.LOCK_EX):
            row = self._db.execute("SELECT MAX(seq) FROM entries").fetchone()
            top = -1 if row is None or row[0] is None else int(row[0])
            if _read_horizon(self._sync_fd, self.log_id) > top:
                _write_horizon(self._sync_fd, self.log_id, top)

    def close(self) -> None:
        self._db.close()
        if self._top is not None:
            self._top.close()
        for fd in (self._wal_fd, self._lock_fd, self._sync_fd, *self._old_fds):
            if fd >= 0:
                os.close(fd)
        self._wal_fd = self._lock_fd = self._sync_fd = -1
        self._old_fds.clear()

    def append(self, build: Callable[[Head], Row]) -> None:
        """Append one entry: ``build(head)`` returns ``(seq, line, chain)`` for the head it
        was given, inside the write transaction. Anything *build* raises rolls back.
        Durable only after :meth:`sync` of its seq."""
        self.append_batch(lambda head: [build(head)])

    def append_batch(
        self,
        build: Callable[[Head], Sequence[Row]],
        seal: Callable[[int, bytes], bytes] | None = None,
    ) -> int | None:
        """Insert a batch of entries in one transaction; return the newest seq (None when
        *build* returned nothing). ``build(head)`` runs inside the write transaction, after
        the write lock is held, so a caller can gather its batch as late as possible. Any
        error, from *build* or SQLite (a constraint, a trigger, a full disk), rolls the
        whole batch back: nothing of it is written. With *seal*, ``seal(seq, chain)`` of the
        batch's last entry is stored in ``seals`` in the same transaction. Durable only after
        :meth:`sync`."""
        try:
            with _flocked(self._lock_fd):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    row = self._db.execute(
                        "SELECT seq, chain FROM entries ORDER BY seq DESC LIMIT 1"
                    ).fetchone()
                    rows = build(None if row is None else (int(row[0]), bytes(row[1])))
                    if not rows:
                        self._db.execute("ROLLBACK")
                        return None
                    self._db.executemany("INSERT INTO entries VALUES (?, ?, ?)", rows)
                    if seal is not None:
                        mac = seal(rows[-1][0], rows[-1][2])
                        self._db.execute(_SEALS)
                        self._db.execute(
                            "INSERT OR REPLACE INTO seals VALUES (?, ?)", (rows[-1][0], mac)
                        )
                    self._db.execute("COMMIT")
                    return int(rows[-1][0])
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise _err(self.path, exc) from exc

    def sync(self, seq: int) -> None:
        """Return once entry *seq* (committed by anyone) is on stable storage: a group flush
        of the WAL (see the module doc). A no-op for a non-durable log.

        Raises:
            AuditStoreError: the WAL could not be fsynced (the entries are committed but
                may not survive a crash; the caller must treat its append as failed).
        """
        if not self.durable:
            return
        try:
            with self._sync_mutex:
                with _flocked(self._sync_fd, fcntl.LOCK_SH):
                    if _read_horizon(self._sync_fd, self.log_id) >= seq:
                        return  # another writer's flush already covered it
                # The newest *committed* seq, read on a connection of its own: the main one
                # may be inside another thread's open batch, whose rows must not count.
                if self._top is None:
                    self._top = sqlite3.connect(
                        self.path,
                        timeout=self._timeout,
                        isolation_level=None,
                        check_same_thread=False,
                    )
                row = self._top.execute("SELECT MAX(seq) FROM entries").fetchone()
                top = seq if row is None or row[0] is None else max(seq, int(row[0]))
                wal = self._wal()
            # Outside every lock: writers of other processes flush at the same time and the
            # kernel folds their flushes into one journal commit.
            os.fdatasync(wal)  # as SQLite syncs its WAL: data and size
            with self._sync_mutex, _flocked(self._sync_fd, fcntl.LOCK_EX):
                if _read_horizon(self._sync_fd, self.log_id) < top:
                    _write_horizon(self._sync_fd, self.log_id, top)
        except sqlite3.Error as exc:
            raise _err(self.path, exc) from exc
        except OSError as exc:
            raise AuditStoreError(
                f"The audit database {self.path.name} could not be flushed to disk",
                "Check the disk; the last entries may not survive a crash.",
            ) from exc

    def _wal(self) -> int:
        """An fd on the WAL file (reopened if it was replaced); first time, fsync the dir."""
        wal = f"{self.path}-wal"
        if self._wal_fd >= 0 and os.fstat(self._wal_fd).st_ino == os.stat(wal).st_ino:
            return self._wal_fd
        if self._wal_fd >= 0:  # another thread may be flushing it: close it with the store
            self._old_fds.append(self._wal_fd)
            self._wal_fd = -1
        self._wal_fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)  # the WAL's (and the lock files') directory entries
        finally:
            os.close(dfd)
        return self._wal_fd

    def size(self) -> int:
        try:
            return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        except sqlite3.Error as exc:
            raise _err(self.path, exc) from exc

    def iter_lines(
        self, start: int = 0, end: int | None = None, *, chunk: int = 4096
    ) -> Iterator[bytes]:
        """Stream the lines of ``[start, end)`` in seq order, *chunk* rows at a time."""
        q = "SELECT line FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq"
        try:
            cur = self._db.execute(q, (start, end if end is not None else 1 << 62))
            while rows := cur.fetchmany(chunk):
                for (v,) in rows:
                    yield v if type(v) is bytes else _b(v)
        except sqlite3.Error as exc:
            raise _err(self.path, exc) from exc

    def iter_chunks(
        self, start: int = 0, end: int | None = None, *, chunk: int = 4096
    ) -> Iterator[list[bytes]]:
        """The lines of ``[start, end)`` in seq order, in lists of up to *chunk* (one per
        fetch, without a step per line for the caller)."""
        q = "SELECT line FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq"
        first = itemgetter(0)
        try:
            cur = self._db.execute(q, (start, end if end is not None else 1 << 62))
            while rows := cur.fetchmany(chunk):
                vals = list(map(first, rows))
                if set(map(type, vals)) != {bytes}:
                    vals = [_b(v) for v in vals]
                yield vals
        except sqlite3.Error as exc:
            raise _err(self.path, exc) from exc

    def lines(self, start: int = 0, end: int | None = None) -> list[bytes]:
        q = "SELECT line FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq"
        try:
            rows = self._db.execute(q, (start, end if end is not None else 1 << 62))
            return [_b(r[0]) for r in rows]
        except sqlite3.Error as exc:
            raise _err(self.path, exc) from exc

    def checkpoint_lines(self) -> list[bytes]:
        try:
            rows = self._db.execute("SELECT line FROM checkpoints ORDER BY tree_size")
            return [_b(r[0]) for r in rows]
        except sqlite3.Error as exc:
            raise _err(self.path, exc) from exc

    def put_seal(self, seq: int, mac: bytes) -> None:
        try:
            self._db.execute(_SEALS)
            self._db.execute("INSERT OR REPLACE INTO seals VALUES (?, ?)", (seq, mac))
        except sqlite3.Error as exc:
            raise _err(self.path, exc) from exc

    def last_seal(self) -> tuple[int, bytes] | None:
        """The newest ``(seq, mac)`` seal, or None (no seal, or no seals table yet)."""
        try:
            if self._db.execute("SELECT 1 FROM sqlite_master WHERE name='seals'").fetchone():
                row = self._db.execute(
                    "SELECT seq, mac FROM seals ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                if row is not None:
                    return int(row[0]), _b(row[1])
            return None
        except sqlite3.Error as exc:
            raise _err(self.path, exc) from exc

    def put_checkpoint(self, tree_size: int, line: bytes) -> None:
        try:
            self._db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", (tree_size, line))
        except sqlite3.Error as exc:
            raise _err(self.path, exc) from exc

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One consistent read snapshot for several reads."""
        try:
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            raise _err(self.path, exc) from exc
        try:
            yield
        finally:
            self._db.execute("COMMIT")


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


@contextmanager
def _flocked(fd: int, how: int = fcntl.LOCK_EX) -> Iterator[None]:
    fcntl.flock(fd, how)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_horizon(fd: int, log_id: str) -> int:
    raw = os.pread(fd, _HORIZON_LEN, 0)
    if len(raw) != _HORIZON_LEN or raw[8:].rstrip(b"\0").decode("ascii", "replace") != log_id:
        return -1  # no horizon yet, or one left by another log at this path
    return int.from_bytes(raw[:8], "big", signed=True)


def _write_horizon(fd: int, log_id: str, seq: int) -> None:
    tag = log_id.encode("ascii", "replace")[:64].ljust(64, b"\0")
    os.pwrite(fd, seq.to_bytes(8, "big", signed=True) + tag, 0)

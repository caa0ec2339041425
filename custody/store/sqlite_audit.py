"""The audit log's own storage adapter: ``HOME/audit.db``, a separate SQLite database.

The log (:class:`custody.audit.log.AuditLog`) owns the chain, the entries' format and the
checkpoints; this adapter owns the SQL. Each append is one short ``BEGIN IMMEDIATE``
transaction that reads the chain head *inside* the transaction, so any number of writer
processes serialise on SQLite's write lock and never fork the chain (a PostgreSQL adapter
would take an advisory lock or use one sequencer transaction; docs/store.md).

Every :mod:`sqlite3` error is raised as :class:`AuditStoreError` (a StorageError), with the
driver's error as its ``__cause__``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from custody.errors import StorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries(seq INTEGER PRIMARY KEY, line BLOB NOT NULL, chain BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints(tree_size INTEGER PRIMARY KEY, line BLOB NOT NULL);
"""  # noqa: E501 - kept verbatim: SQLite stores this text in sqlite_master

Head = tuple[int, bytes] | None
"""``(seq, chain hash)`` of the newest entry, or ``None`` for an empty log."""


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
        durable: ``synchronous=FULL`` (each commit fsynced); False only for scratch logs.
        timeout: seconds to wait for another writer's lock.
        new_log_id: makes the log id of a new database.

    Raises:
        AuditStoreError: it cannot be opened or initialised.
    """

    def __init__(
        self, path: Path, *, durable: bool, timeout: float, new_log_id: Callable[[], str]
    ) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
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

    def close(self) -> None:
        self._db.close()

    def append(self, build: Callable[[Head], tuple[int, bytes, bytes]]) -> None:
        """Append one entry: ``build(head)`` returns ``(seq, line, chain)`` for the head it
        was given, inside the write transaction. Anything *build* raises rolls back."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT seq, chain FROM entries ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, line, chain = build(None if row is None else (int(row[0]), bytes(row[1])))
                self._db.execute("INSERT INTO entries VALUES (?, ?, ?)", (seq, line, chain))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _err(self.path, exc) from exc

    def size(self) -> int:
        try:
            return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
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

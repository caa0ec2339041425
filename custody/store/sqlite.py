"""The SQLite adapter of the store port: key versions, wrapped objects, re-key and ceremony
state, and the schema migrations.

One file per deployment (``HOME/custody.db``) in WAL mode with ``synchronous=FULL``, so a
committed transaction survives a crash or power loss, and ``secure_delete=ON`` (deleted
content is zeroed in the file). Schema changes are numbered
migrations (:mod:`custody.store.sqlite_migrations`, run by :mod:`custody.store.migrate`)
applied in order inside a transaction;
``PRAGMA user_version`` records the last one applied. Every foreign ``sqlite3`` error is
translated into :class:`StorageError` here.

:class:`SqliteStore` implements :class:`custody.store.port.Store`; the methods live in
:mod:`~custody.store.sqlite_keys`, :mod:`~custody.store.sqlite_work` and
:mod:`~custody.store.sqlite_ceremonies`. Only :meth:`SqliteStore.query` and
:meth:`SqliteStore.tx` take SQL: they are the adapter's raw access, for its own tests and
for tests that damage a store on purpose, and are not part of the port.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from custody.errors import StorageError
from custody.store.migrate import migrate
from custody.store.sqlite_access import SqliteAccess
from custody.store.sqlite_base import Params, storage_error
from custody.store.sqlite_ceremonies import SqliteCeremonies
from custody.store.sqlite_keys import SqliteKeys
from custody.store.sqlite_mfa import SqliteMfa
from custody.store.sqlite_migrations import MIGRATIONS, SCHEMA_VERSION
from custody.store.sqlite_secrets import SqliteSecrets
from custody.store.sqlite_work import SqliteWork
from custody.store.sqlite_workers import SqliteWorkers

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SqliteStore", "statements"]


def statements(script: str) -> list[str]:
    """Split a migration into statements at the semicolons that end one (a trigger body's
    inner semicolons do not: :func:`sqlite3.complete_statement` decides)."""
    out: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\n;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \t\n;"):
        raise ValueError("a migration ends inside a statement")
    return out


class SqliteStore(
    SqliteKeys, SqliteWork, SqliteWorkers, SqliteCeremonies, SqliteSecrets, SqliteAccess, SqliteMfa
):
    """An open SQLite store (one connection; use one per thread or process)."""

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> SqliteStore:
        """Open (and migrate) the store.

        Args:
            path: the database file.
            create: allow creating a new file; otherwise a missing file is an error.

        Raises:
            StorageError: the file is missing, corrupted, locked or unwritable.
        """
        if not create and not path.exists():
            raise StorageError(
                f"The store {path} does not exist",
                "Run 'custody init' first. A home that lost its store: 'custody store restore "
                "FILE' or 'custody root import DIR' (docs/recovery.md).",
            )
        try:
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            # deleted rows (held share ciphertexts, old pending state) are overwritten with
            # zeros, not left in free pages for whoever reads the file
            conn.execute("PRAGMA secure_delete=ON")
            store = cls(path, conn)
            store._migrate()
            return store
        except sqlite3.Error as exc:
            raise storage_error(path, exc) from exc

    def _migrate(self) -> None:
        migrate(self)

    def schema_version(self) -> int:
        (current,) = self.conn.execute("PRAGMA user_version").fetchone()
        return int(current)

    def apply_migration(self, n: int, script: str) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in statements(script):
                self.conn.execute(stmt)
            self.conn.execute(f"PRAGMA user_version={n + 1}")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # -- metadata and integrity -------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        v = self._scalar("SELECT value FROM meta WHERE key=?", (key,))
        return None if v is None else str(v)

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def change_counter(self) -> object | None:
        """``PRAGMA data_version`` (changes when another connection, in any process, commits
        to the file) with this connection's ``total_changes`` (its own writes)."""
        return (self._scalar("PRAGMA data_version"), self.conn.total_changes)

    def check(self) -> None:
        """Run SQLite's integrity check.

        Raises:
            StorageError: the file is damaged.
        """
        rows = self._rows("PRAGMA quick_check")
        if not rows or rows[0][0] != "ok":
            raise StorageError(
                f"The store {self.path.name} failed its integrity check",
                "Restore it from a backup.",
            )

    def close(self) -> None:
        self.conn.close()

    def watch_access(self, on_change: Callable[[str], None]) -> None:
        """No change notifications on SQLite (one host; every decision reads the file)."""
        return None

    # -- raw access (adapter and tests only; not part of the port) --------------------
    def query(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run a read query.

        Raises:
            StorageError: on any SQLite failure.
        """
        return self._rows(sql, params)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A raw write transaction on the connection, rolled back on any error.

        Raises:
            StorageError: on any SQLite failure (the transaction is rolled back).
        """
        try:
            with self.transaction():
                yield self.conn
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc

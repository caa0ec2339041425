"""The SQLite store: key versions, wrapped objects, and schema migrations.

One file per deployment (``HOME/custody.db``) in WAL mode with ``synchronous=FULL``, so a
committed transaction survives a crash or power loss. Schema changes are numbered
migrations applied in order inside a transaction; ``PRAGMA user_version`` records the last
one applied. Every foreign ``sqlite3`` error is translated into :class:`StorageError` here.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from custody.errors import StorageError

MIGRATIONS: tuple[str, ...] = (
    # 1: key hierarchy and wrapped objects
    """
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE root_versions(
        version INTEGER PRIMARY KEY,
        state TEXT NOT NULL,
        kcv TEXT NOT NULL,
        epoch INTEGER,
        blob BLOB,
        created TEXT NOT NULL,
        state_changed TEXT NOT NULL
    );
    CREATE TABLE kek_versions(
        branch TEXT NOT NULL,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        kcv TEXT NOT NULL,
        root_version INTEGER NOT NULL REFERENCES root_versions(version),
        wrapped BLOB NOT NULL,
        created TEXT NOT NULL,
        state_changed TEXT NOT NULL,
        destroy_after TEXT,
        PRIMARY KEY(branch, version)
    );
    CREATE TABLE objects(
        id INTEGER PRIMARY KEY,
        uid BLOB NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        branch TEXT NOT NULL,
        kek_version INTEGER NOT NULL,
        wrapped BLOB NOT NULL,
        digest BLOB NOT NULL,
        label TEXT,
        created TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    CREATE INDEX objects_by_version ON objects(branch, kek_version);
    """,
    # 2: re-key jobs (durable checkpoint), the job lease, retirement holds, backup catalog
    """
    CREATE TABLE rekey_jobs(
        id INTEGER PRIMARY KEY,
        branch TEXT NOT NULL,
        to_version INTEGER NOT NULL,
        state TEXT NOT NULL,
        total INTEGER NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        last_id INTEGER NOT NULL DEFAULT 0,
        batch INTEGER NOT NULL,
        owner_pid INTEGER,
        started TEXT NOT NULL,
        updated TEXT NOT NULL,
        finished TEXT,
        verified INTEGER,
        verify_failed INTEGER,
        error TEXT
    );
    CREATE INDEX rekey_jobs_by_state ON rekey_jobs(state, branch);
    CREATE TABLE rekey_lease(
        name TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        owner_pid INTEGER NOT NULL,
        owner_host TEXT NOT NULL,
        acquired TEXT NOT NULL,
        expires TEXT NOT NULL
    );
    CREATE TABLE retire_holds(
        branch TEXT NOT NULL,
        version INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created TEXT NOT NULL,
        PRIMARY KEY(branch, version)
    );
    CREATE TABLE backups(
        file_id BLOB PRIMARY KEY,
        path TEXT NOT NULL,
        kek_version INTEGER NOT NULL,
        size INTEGER NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    CREATE INDEX backups_by_version ON backups(kek_version);
    """,
    # 3: ceremonies: participant roster, ceremony registry, share sets, drills, incidents
    """
    CREATE TABLE participants(
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        alg TEXT NOT NULL,
        public BLOB NOT NULL UNIQUE,
        fingerprint TEXT NOT NULL UNIQUE,
        valid_from INTEGER NOT NULL,
        valid_until INTEGER NOT NULL,
        revoked_at INTEGER,
        enrolled_by TEXT NOT NULL,
        enrolled_in TEXT
    );
    CREATE TABLE ceremonies(
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        coordinator TEXT,
        bundle TEXT NOT NULL,
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        pending TEXT
    );
    CREATE TABLE share_sets(
        epoch INTEGER PRIMARY KEY,
        ceremony_id TEXT NOT NULL,
        policy_digest TEXT NOT NULL,
        dealer_public BLOB NOT NULL,
        rk_kcv TEXT NOT NULL,
        rk_public BLOB NOT NULL,
        scheme TEXT NOT NULL,
        state TEXT NOT NULL,
        created INTEGER NOT NULL,
        retired_at INTEGER
    );
    CREATE TABLE share_holders(
        epoch INTEGER NOT NULL REFERENCES share_sets(epoch),
        custodian TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        group_index INTEGER NOT NULL,
        member_index INTEGER NOT NULL,
        commitment TEXT NOT NULL,
        PRIMARY KEY(epoch, group_index, member_index)
    );
    CREATE TABLE drills(
        id INTEGER PRIMARY KEY,
        ceremony_id TEXT NOT NULL,
        custodian TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        passed_at INTEGER NOT NULL
    );
    CREATE TABLE incidents(
        id TEXT PRIMARY KEY,
        ceremony_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        created INTEGER NOT NULL,
        report TEXT NOT NULL
    );
    """,
    # 4: staged destruction of retired root versions
    """
    ALTER TABLE root_versions ADD COLUMN destroy_after TEXT;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def _storage_error(path: Path, exc: Exception) -> StorageError:
    msg = str(exc).lower()
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return StorageError(
            f"The store {path.name} is corrupted",
            "Restore it from a backup; custody will not write to a damaged store.",
        )
    if "locked" in msg or "busy" in msg:
        return StorageError(
            f"The store {path.name} is busy", "Another custody process holds it; retry."
        )
    if "disk" in msg and "full" in msg:
        return StorageError("The disk is full", "Free space and retry; nothing was changed.")
    if "readonly" in msg or "read-only" in msg:
        return StorageError(f"The store {path.name} is read-only", "Check file permissions.")
    return StorageError(
        f"Store error in {path.name}: {type(exc).__name__}", "See the logs; nothing was changed."
    )


class Store:
    """An open store. Use :meth:`tx` for writes; reads may use :meth:`query`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> Store:
        """Open (and migrate) the store.

        Args:
            path: the database file.
            create: allow creating a new file; otherwise a missing file is an error.

        Raises:
            StorageError: the file is missing, corrupted, locked or unwritable.
        """
        if not create and not path.exists():
            raise StorageError(f"The store {path} does not exist", "Run 'custody init' first.")
        try:
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(path, conn)
            store._migrate()
            return store
        except sqlite3.Error as exc:
            raise _storage_error(path, exc) from exc

    def _migrate(self) -> None:
        (current,) = self.conn.execute("PRAGMA user_version").fetchone()
        if current > SCHEMA_VERSION:
            raise StorageError(
                f"The store schema v{current} is newer than this custody (v{SCHEMA_VERSION})",
                "Upgrade custody.",
            )
        for n in range(current, SCHEMA_VERSION):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[n].split(";"):
                    if stmt.strip():
                        self.conn.execute(stmt)
                self.conn.execute(f"PRAGMA user_version={n + 1}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any error.

        Raises:
            StorageError: on any SQLite failure (the transaction is rolled back).
        """
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _storage_error(self.path, exc) from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _storage_error(self.path, exc) from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")

    def query(
        self, sql: str, params: tuple[object, ...] | dict[str, object] = ()
    ) -> list[sqlite3.Row]:
        """Run a read query.

        Raises:
            StorageError: on any SQLite failure.
        """
        try:
            cur = self.conn.execute(sql, params)
            return cur.fetchall()
        except sqlite3.Error as exc:
            raise _storage_error(self.path, exc) from exc

    def get_meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def check(self) -> None:
        """Run SQLite's integrity check.

        Raises:
            StorageError: the file is damaged.
        """
        rows = self.query("PRAGMA quick_check")
        if not rows or rows[0][0] != "ok":
            raise StorageError(
                f"The store {self.path.name} failed its integrity check",
                "Restore it from a backup.",
            )

    def close(self) -> None:
        self.conn.close()

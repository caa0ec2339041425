"""The SQLite adapter's connection core: error mapping, statements, transactions.

Only the store adapter modules (``custody/store/sqlite*.py``) import :mod:`sqlite3`; the
import-linter contract in ``pyproject.toml`` keeps it so.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from custody.errors import StorageError

Params = Sequence[object] | dict[str, object]

_MEMO_MAX = 1024  # statements a cached_reads memo keeps before it starts again
# the parameter types a kept statement may have: each binds as itself, and two values of
# one of these types that are equal in Python bind as the same SQLite value (not so for
# 1 and 1.0, or 0.0 and -0.0; a bytearray or memoryview cannot be a key)
_KEPT_PARAMS = frozenset({str, int, bytes, bool, type(None)})


def storage_error(path: Path, exc: Exception) -> StorageError:
    """A typed error for a foreign :mod:`sqlite3` error (no SQL or values in the message)."""
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


class SqliteBase:
    """One SQLite connection (autocommit mode; transactions are explicit)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self._path = path
        self.conn = conn
        self._depth = 0  # open transaction levels (0: none)
        # cached_reads: SELECT results kept while the file is unchanged
        self._memo: dict[tuple[str, tuple[tuple[type, object], ...]], list[Any]] = {}
        self._memo_on = False
        self._memo_version: object = None  # PRAGMA data_version when the memo was checked
        self._memo_changes = -1  # this connection's total_changes when it was filled

    @property
    def path(self) -> Path:
        return self._path

    # -- statements ----------------------------------------------------------------
    def _rows(self, sql: str, params: Params = ()) -> list[Any]:
        if self._memo_on and not self.conn.in_transaction:
            return self._memo_rows(sql, params)
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(self._path, exc) from exc

    # -- one request's reads -------------------------------------------------------
    @contextmanager
    def cached_reads(self) -> Iterator[None]:
        """:meth:`custody.store.port.StoreCore.cached_reads`: inside, a plain ``SELECT``
        run outside a transaction is answered from the results kept from earlier ones
        while nothing has been committed to the file since.

        Whether anything was committed is asked once, on entry: ``PRAGMA data_version``
        changes whenever another connection, in any process, commits to the file (so a
        revocation written by the CLI or another worker empties the memo before the next
        request reads). This connection's own writes are seen on every hit: its
        ``total_changes`` is compared with the value when the memo was filled, and any
        write since (in this scope or not) empties it. Reads inside a transaction or a
        read snapshot always go to the file, so a read-modify-write sees what it locks.
        The rows kept are what the file holds (wrapped keys, hashes, ciphertext), never a
        plaintext; at most ``_MEMO_MAX`` statements, then the memo starts again.
        """
        if self._memo_on:  # nested: the outer scope's check holds
            yield
            return
        try:
            version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise storage_error(self._path, exc) from exc
        if version != self._memo_version:
            self._memo.clear()
            self._memo_version = version
        self._memo_on = True
        try:
            yield
        finally:
            self._memo_on = False

    def _memo_rows(self, sql: str, params: Params) -> list[Any]:
        changes = self.conn.total_changes
        if changes != self._memo_changes:  # this connection wrote: nothing kept holds
            self._memo.clear()
            self._memo_changes = changes
        if (
            not isinstance(params, (tuple, list))
            or sql.lstrip()[:6].upper() != "SELECT"
            or not all(type(p) in _KEPT_PARAMS for p in params)
        ):
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise storage_error(self._path, exc) from exc
        key = (sql, tuple((type(p), p) for p in params))  # True is not 1 here
        got = self._memo.get(key)
        if got is None:
            try:
                got = self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise storage_error(self._path, exc) from exc
            if self.conn.total_changes != changes:  # a statement that wrote is not kept
                return got
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[key] = got
        return list(got)  # the caller's list: what is kept cannot be changed through it

    def _memo_recheck(self) -> None:
        """After a transaction or a read snapshot inside a scope: it read the file, and a
        row kept from before it may be older than what it saw (a concurrent lockout that
        refused a TOTP step, rows the access seal has just checked). So what was committed
        since the scope's check empties the memo here too: a read after it is never older
        than the transaction's view."""
        if not self._memo_on or self.conn.in_transaction:
            return
        try:
            version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            version = None  # unknown: keep nothing, and check again on the next entry
        if version is None or version != self._memo_version:
            self._memo.clear()
            self._memo_version = version

    def _one(self, sql: str, params: Params = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _scalar(self, sql: str, params: Params = ()) -> Any:
        row = self._one(sql, params)
        return None if row is None else row[0]

    def _iter(self, sql: str, params: Params = ()) -> Iterator[Any]:
        try:
            yield from self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise storage_error(self._path, exc) from exc

    def _batches(self, sql: str, params: Params = (), size: int = 10_000) -> Iterator[list[Any]]:
        """The rows of one query, in lists of up to *size* (``fetchmany``)."""
        try:
            cur = self.conn.execute(sql, params)
            while rows := cur.fetchmany(size):
                yield rows
        except sqlite3.Error as exc:
            raise storage_error(self._path, exc) from exc

    def read_snapshot(self) -> contextlib.AbstractContextManager[None]:
        """:meth:`custody.store.port.StoreCore.read_snapshot`."""
        return self._read_snapshot()

    @contextmanager
    def _read_snapshot(self) -> Iterator[None]:
        """One deferred read transaction (a WAL snapshot) around several reads, unless a
        transaction is already open (then its own view holds)."""
        own = not self.conn.in_transaction
        if own:
            self._run("BEGIN")
        try:
            yield
        finally:
            if own and self.conn.in_transaction:
                self._quiet("COMMIT")  # read only: nothing to keep or undo
            if own:
                self._memo_recheck()

    def _write(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        """Run one write statement in a transaction (the caller's, or its own)."""
        with self.transaction():
            try:
                return self.conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise storage_error(self._path, exc) from exc

    def _write_many(self, sql: str, rows: Iterable[Params]) -> int:
        with self.transaction():
            try:
                return self.conn.executemany(sql, rows).rowcount
            except sqlite3.Error as exc:
                raise storage_error(self._path, exc) from exc

    def _insert_unique(self, sql: str, params: Params, taken: StorageError) -> None:
        """Run one write in the caller's transaction; if it breaks a constraint (a row with
        the same key or unique value), raise *taken* instead of the generic error."""
        try:
            self.conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise taken from exc
        except sqlite3.Error as exc:
            raise storage_error(self._path, exc) from exc

    def _run(self, sql: str) -> None:
        try:
            self.conn.execute(sql)
        except sqlite3.Error as exc:
            raise storage_error(self._path, exc) from exc

    def _quiet(self, sql: str) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute(sql)

    # -- transactions --------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any exception); nested: a
        savepoint. Holding the write lock from the start is what makes claims exclusive."""
        if self._depth:
            name = f"sp{self._depth}"
            self._run(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._quiet(f"ROLLBACK TO {name}")
                self._quiet(f"RELEASE {name}")
                raise
            finally:
                self._depth -= 1
            self._run(f"RELEASE {name}")
            return
        self._run("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
            self._run("COMMIT")
        except BaseException:
            self._quiet("ROLLBACK")
            raise
        finally:
            self._depth = 0
            self._memo_recheck()

    @contextmanager
    def rehearsal(self) -> Iterator[None]:
        """A write transaction that always rolls back."""
        if self._depth:
            raise StorageError("A rehearsal cannot run inside a transaction", "This is a bug.")
        self._run("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        finally:
            self._quiet("ROLLBACK")
            self._depth = 0
            self._memo_recheck()

    def _require_transaction(self, what: str) -> None:
        if not self._depth:
            raise StorageError(f"{what} must run inside a transaction", "This is a bug.")

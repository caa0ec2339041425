"""The audit log's storage adapter on PostgreSQL: the ``audit_*`` tables in the deployment's
PostgreSQL store, shared by every custody process and host that writes to it.

The log (:class:`custody.audit.log.AuditLog`) owns the chain, the entries' format and the
checkpoints; this adapter owns the SQL, with the same methods as
:class:`custody.store.sqlite_audit.SqliteAuditStore`.

One chain across writers. Each batch of appends is one transaction that first takes a
transaction-scoped advisory lock (:data:`AUDIT_LOCK`) and only then reads the chain head,
so writers on any number of processes and hosts are serialised at the head and every
batch extends the newest committed entry: one chain, one order, no gap and no fork (the
``seq`` primary key would refuse a fork even if the lock were bypassed). The lock is
released at commit.

Group commit. A batch commits with ``synchronous_commit = off``: its commit record is in
the WAL when the lock is released, but not yet flushed, so the next writer does not wait
for this one's disk flush. :meth:`PostgresAuditStore.sync` then makes the batch durable:
if the server's WAL flush position (``pg_current_wal_flush_lsn()``) has already passed the
batch's commit it returns at once (another writer's flush covered it); otherwise it commits,
with ``synchronous_commit = on``, a transaction that writes only a transactional logical
message (``pg_logical_emit_message``: a WAL record and no table row; a transaction that
merely holds an xid writes no WAL and would commit without a flush), whose commit waits for
the WAL to be flushed past its own record, and so past the batch's. The
server folds concurrent flushes into one (and ``commit_delay`` can widen the group), so one
flush serves every writer that committed before it. The caller returns only after
:meth:`sync`, as with SQLite.

Every :mod:`psycopg` error is raised as :class:`AuditStoreError` (a StorageError).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg

from custody.errors import CustodyError
from custody.store.postgres_base import connect, describe
from custody.store.sqlite_audit import AuditStoreError, Head, Row

__all__ = ["AUDIT_LOCK", "PostgresAuditStore"]

AUDIT_LOCK = 0x6175646974  # "audit": the chain head's advisory lock

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS audit_meta(k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_entries(seq BIGINT PRIMARY KEY, line BYTEA NOT NULL, "
    "chain BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_checkpoints(tree_size BIGINT PRIMARY KEY, "
    "line BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_seals(seq BIGINT PRIMARY KEY, mac BYTEA NOT NULL)",
)


class _Dropped(Exception):
    """The connection was gone before a batch read the head (internal: it is retried)."""


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


class PostgresAuditStore:
    """Connections to the audit tables of one PostgreSQL store.

    Args:
        url: the store's password-less URL.
        durable: every append is flushed (:meth:`sync`) before it returns.
        timeout: seconds to wait for the head lock (``lock_timeout``).
        new_log_id: makes the log id of a new log.
        password_file: the store's 0600 password file, if it has one.

    Raises:
        AuditStoreError: it cannot be reached or initialised.
    """

    def __init__(
        self,
        url: str,
        *,
        durable: bool,
        timeout: float,
        new_log_id: Callable[[], str],
        password_file: Path | None = None,
    ) -> None:
        self.url = url
        self.path = Path(describe(url))  # for messages only
        self.durable = durable
        self._where = describe(url)
        self._flush_mutex = threading.Lock()
        try:
            self._password_file = password_file
            self._timeout = timeout
            self._db = self._open_writer()
            self._flush = connect(url, password_file=password_file) if durable else None
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))
                for stmt in _SCHEMA:
                    self._db.execute(stmt)
                self._db.execute(
                    "INSERT INTO audit_meta(k, v) VALUES ('log_id', %s) ON CONFLICT DO NOTHING",
                    (new_log_id(),),
                )
            row = self._db.execute("SELECT v FROM audit_meta WHERE k='log_id'").fetchone()
            self.log_id = str(row[0])
        except psycopg.Error as exc:
            raise self._err(exc) from exc
        except CustodyError:
            raise  # a bad password file or URL: its own typed error
        except Exception as exc:
            raise AuditStoreError(
                f"The audit log in {self._where} cannot be opened",
                "Check the store URL, its password source and the server.",
            ) from exc

    def _open_writer(self) -> Any:
        db = connect(self.url, password_file=self._password_file, prompt=False)
        db.execute(f"SET lock_timeout = {int(self._timeout * 1000)}")
        db.execute("SET synchronous_commit = off")  # sync() makes each batch durable
        return db

    def _alive(self) -> None:
        """Reconnect a connection the server dropped since the last call (a restart or a
        failover): a long-lived log keeps working; the call that saw the failure failed."""
        if self._db.closed or self._db.broken:
            self._db = self._open_writer()
        if self._flush is not None and (self._flush.closed or self._flush.broken):
            self._flush = connect(self.url, password_file=self._password_file, prompt=False)

    def _err(self, exc: BaseException) -> AuditStoreError:
        state = getattr(exc, "sqlstate", None) or ""
        return AuditStoreError(
            f"The audit log in {self._where} failed ({type(exc).__name__} {state})".replace(
                " )", ")"
            ),
            "Check the server, its disk and locks.",
        )

    def close(self) -> None:
        self._db.close()
        if self._flush is not None:
            self._flush.close()

    def append(self, build: Callable[[Head], Row]) -> None:
        """Append one entry (see :meth:`append_batch`)."""
        self.append_batch(lambda head: [build(head)])

    def append_batch(
        self,
        build: Callable[[Head], Sequence[Row]],
        seal: Callable[[int, bytes], bytes] | None = None,
    ) -> int | None:
        """Insert a batch in one transaction that holds the head lock; return the newest
        seq (None when *build* returned nothing). ``build(head)`` runs after the lock is
        held, with the newest committed head. Any error rolls the whole batch back.
        Durable only after :meth:`sync`."""
        try:
            self._alive()
            try:
                return self._append(build, seal)
            except _Dropped:
                # the server dropped the connection before the head was read (a restart
                # or failover since the last call): nothing was written and *build* was
                # not called, so the batch goes in once more on a new connection
                self._db = self._open_writer()
                return self._append(build, seal)
        except _Dropped as exc:
            raise self._err(exc.__cause__ or exc) from exc
        except psycopg.Error as exc:
            raise self._err(exc) from exc

    def _append(
        self, build: Callable[[Head], Sequence[Row]], seal: Callable[[int, bytes], bytes] | None
    ) -> int | None:
        db = self._db
        built = False
        try:
            # two round trips while the lock is held, both pipelined: BEGIN, the lock and
            # the head (a statement of its own, executed after the lock is granted, so its
            # snapshot sees the newest committed entry); then the inserts and COMMIT
            with db.pipeline(), db.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))
                cur.execute("SELECT seq, chain FROM audit_entries ORDER BY seq DESC LIMIT 1")
                row = cur.fetchone()
                built = True
                rows = build(None if row is None else (int(row[0]), bytes(row[1])))
                if not rows:
                    cur.execute("ROLLBACK")
                    return None
                mac = None if seal is None else seal(rows[-1][0], rows[-1][2])
                cur.executemany("INSERT INTO audit_entries VALUES (%s, %s, %s)", rows)
                if mac is not None:
                    cur.execute(
                        "INSERT INTO audit_seals VALUES (%s, %s) "
                        "ON CONFLICT(seq) DO UPDATE SET mac=excluded.mac",
                        (rows[-1][0], mac),
                    )
                cur.execute("COMMIT")
        except psycopg.OperationalError as exc:
            if not built:  # the connection failed before the head was read
                with contextlib.suppress(psycopg.Error):
                    db.close()
                raise _Dropped from exc
            self._rollback(db)
            raise
        except BaseException:
            self._rollback(db)
            raise
        return int(rows[-1][0])

    @staticmethod
    def _rollback(db: Any) -> None:
        if db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                db.execute("ROLLBACK")

    def sync(self, seq: int) -> None:
        """Return once entry *seq* (committed by anyone) is flushed to the server's WAL:
        at once when the flush position already covers the newest commit, else by one
        durable empty commit (see the module doc). A no-op for a non-durable log.

        Raises:
            AuditStoreError: the flush failed (the caller must treat its append as failed).
        """
        if self._flush is None:
            return
        try:
            with self._flush_mutex:
                self._alive()
                c = self._flush
                insert, flushed = c.execute(
                    "SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text"
                ).fetchone()
                if _lsn(flushed) >= _lsn(insert):
                    return  # every commit so far, ours included, is on disk
                c.execute(  # one round trip (simple query protocol: no parameters)
                    "BEGIN; SET LOCAL synchronous_commit = on; "
                    "SELECT pg_logical_emit_message(true, 'custody.audit', ''); COMMIT"
                )
        except psycopg.Error as exc:
            raise self._err(exc) from exc

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            if self._db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                self._alive()  # never inside a snapshot: its reads must stay one view
            return list(self._db.execute(sql, params or None).fetchall())
        except psycopg.Error as exc:
            raise self._err(exc) from exc

    def size(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM audit_entries")[0][0])

    def iter_lines(
        self, start: int = 0, end: int | None = None, *, chunk: int = 4096
    ) -> Iterator[bytes]:
        """Stream the lines of ``[start, end)`` in seq order, *chunk* rows at a time (by
        seq ranges, so the scan needs no open cursor between chunks)."""
        hi = end if end is not None else 1 << 62
        nxt = start
        while nxt < hi:
            rows = self._q(
                "SELECT seq, line FROM audit_entries WHERE seq >= %s AND seq < %s "
                "ORDER BY seq LIMIT %s",
                (nxt, hi, chunk),
            )
            if not rows:
                return
            for _seq, line in rows:
                yield bytes(line)
            nxt = int(rows[-1][0]) + 1

    def iter_chunks(
        self, start: int = 0, end: int | None = None, *, chunk: int = 4096
    ) -> Iterator[list[bytes]]:
        """The lines of ``[start, end)`` in seq order, in lists of up to *chunk*."""
        it = self.iter_lines(start, end, chunk=chunk)
        while block := list(islice(it, chunk)):
            yield block

    def lines(self, start: int = 0, end: int | None = None) -> list[bytes]:
        return list(self.iter_lines(start, end))

    def checkpoint_lines(self) -> list[bytes]:
        return [bytes(r[0]) for r in self._q("SELECT line FROM audit_checkpoints ORDER BY 1")]

    def put_seal(self, seq: int, mac: bytes) -> None:
        self._q(
            "INSERT INTO audit_seals VALUES (%s, %s) ON CONFLICT(seq) DO UPDATE "
            "SET mac=excluded.mac RETURNING seq",
            (seq, mac),
        )

    def last_seal(self) -> tuple[int, bytes] | None:
        rows = self._q("SELECT seq, mac FROM audit_seals ORDER BY seq DESC LIMIT 1")
        return None if not rows else (int(rows[0][0]), bytes(rows[0][1]))

    def put_checkpoint(self, tree_size: int, line: bytes) -> None:
        self._q(
            "INSERT INTO audit_checkpoints VALUES (%s, %s) ON CONFLICT(tree_size) DO UPDATE "
            "SET line=excluded.line RETURNING tree_size",
            (tree_size, line),
        )

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One consistent read snapshot (REPEATABLE READ) for several reads."""
        try:
            self._db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        except psycopg.Error as exc:
            raise self._err(exc) from exc
        try:
            yield
        finally:
            try:
                self._db.execute("COMMIT")
            except psycopg.Error as exc:
                raise self._err(exc) from exc

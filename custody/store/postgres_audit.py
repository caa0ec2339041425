"""The audit log's storage adapter on PostgreSQL: the ``audit_*`` tables in the deployment's
PostgreSQL store, shared by every custody process and host that writes to it.

The log (:class:`custody.audit.log.AuditLog`) owns the chain, the entries' format and the
checkpoints; this adapter owns the SQL, with the same methods as
:class:`custody.store.sqlite_audit.SqliteAuditStore`, and :meth:`append_staged`, which
the log uses on PostgreSQL.

Cross-process group commit (:meth:`PostgresAuditStore.append_staged`). A writer inserts its
batch, the canonical parts of each entry without ``log``, ``seq`` and ``prev``, into
``audit_staging`` under a random batch token (``owner``) and commits that. In the same round
trip, in a second transaction, it calls ``custody_audit_turn(owner)``: that waits for the
head lock (``pg_advisory_xact_lock(AUDIT_LOCK)``) and, if the writer's rows were chained (or
failed) while it waited, gives the lock straight back (it is taken in a plpgsql exception
block, a subtransaction, and released when that rolls back), so a writer with nothing left
to do holds the lock for microseconds and never across a round trip. A writer that keeps
the lock is the chainer: statements that start after the lock read the head and every
staged row (``FOR UPDATE``, in id order); it splices in the chain fields (the log's
``splice``), inserts the entries, records each staged row's ``seq`` and ``prev`` (its own
rows it deletes), seals the new head if it holds a sealer, and commits asynchronously, so
the lock is released before the WAL flush and the next chain is made during it; then it
flushes (as :meth:`sync` does). A writer whose rows were chained deletes them
(``DELETE ... RETURNING seq, prev``) in a transaction that commits with ``synchronous_commit
= on``: that commit's record follows the chain's in the WAL, so when it returns the chain is
durable. One round trip to stage and wait, one to chain or collect and flush; PostgreSQL
folds the concurrent flushes into few. The rules:

* a staged row whose writer died is chained like any other, in id order, never dropped (its
  writer can have acted only after a return, and it returns only once chained);
* a chain that fails rolls back to a savepoint taken after the lock, marks every row of the
  attempt ``failed`` while still holding the lock and commits that: every caller of the
  batch is told (a COMMIT that fails has released the lock, so rows another chainer has
  chained in the meantime are not marked; their callers succeed, truthfully);
* a caller that is about to report failure (its chain failed, its lock wait timed out, the
  server failed) first deletes its own staged rows (:meth:`_withdraw`; the DELETE waits for
  a chainer's row lock). If they were chained after all the append succeeded; otherwise
  none of it can be chained later. Only if the server cannot be reached even for that do
  the rows stay staged, and may then be chained later (an entry without an outcome);
* rows chained or failed more than an hour ago (their waiter died) are deleted by a chainer;
* a chainer stopped while it holds the lock (SIGSTOP, a hung host) loses its transaction,
  and the lock, after ``idle_in_transaction_session_timeout`` (the log's timeout).

The staging table is created with the other audit tables when a log is opened (the audit
tables are the audit adapter's own, beside the store's migrations, so a log works in a
database that holds no store). The direct path below (:meth:`append_batch`: one
transaction per batch under the lock, then :meth:`sync`) keeps the adapter's methods those
of the SQLite one and is what ``bench/bench_pg.py`` compares against; it stays exact beside
staged writers, as both take the same lock.

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
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
    # cross-process group commit (append_staged): an entry's canonical parts wait here,
    # under their writer's batch token (owner), until a chainer gives them seq and prev
    "CREATE TABLE IF NOT EXISTS audit_staging(id BIGSERIAL PRIMARY KEY, owner BYTEA NOT NULL, "
    "parts BYTEA[] NOT NULL, seq BIGINT, prev BYTEA, "
    "failed BOOLEAN NOT NULL DEFAULT false, "
    "staged_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS audit_staging_by_owner ON audit_staging(owner)",
    # a waiter's turn: wait for the head lock, but give it straight back (the exception
    # block is a subtransaction, and a lock taken in one is released when it rolls back)
    # when the waiter's batch was chained, or failed, while it waited; then tell the
    # statements after it, whose snapshots start after the lock, whether it is held
    "CREATE OR REPLACE FUNCTION custody_audit_turn(o BYTEA) RETURNS BOOLEAN "  # noqa: S608 - a constant
    "LANGUAGE plpgsql AS $f$\n"
    "DECLARE got BOOLEAN := true;\n"
    "BEGIN\n"
    "  BEGIN\n"
    f"    PERFORM pg_advisory_xact_lock({AUDIT_LOCK});\n"
    "    IF EXISTS (SELECT 1 FROM audit_staging WHERE owner = o "
    "AND (seq IS NOT NULL OR failed)) THEN\n"
    "      RAISE EXCEPTION 'finished' USING ERRCODE = 'P0001';\n"
    "    END IF;\n"
    "  EXCEPTION WHEN raise_exception THEN\n"
    "    got := false;\n"
    "  END;\n"
    "  PERFORM set_config('custody.chainer', got::text, true);\n"
    "  RETURN got;\n"
    "END\n$f$",
)
STALE = "1 hour"  # a chained or failed staged row older than this has no waiter left
Splice = Callable[[Sequence[bytes], int, bytes], tuple[bytes, bytes]]
"""``splice(parts, seq, prev)``: the entry line of staged *parts* at *seq* after the chain
hash *prev*, and its own chain hash (:class:`custody.audit.log.AuditLog` owns the format)."""


class ChainRolledBack(Exception):
    """The chain transaction that held this batch failed (internal)."""


class _Chainer:
    """How a chainer in this process turns staged parts into entries."""

    __slots__ = ("genesis", "seal", "splice")

    def __init__(
        self, splice: Splice, genesis: bytes, seal: Callable[[int, bytes], bytes] | None
    ) -> None:
        self.splice = splice
        self.genesis = genesis
        self.seal = seal


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
        self._chains = 0
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
        # a chainer stopped while it holds the head lock (SIGSTOP, a hung host) must not
        # stall every writer: the server ends its transaction, and with it the lock
        db.execute(f"SET idle_in_transaction_session_timeout = {int(self._timeout * 1000)}")
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

    # -- cross-process group commit --------------------------------------------------
    def append_staged(
        self,
        parts: Sequence[Sequence[bytes]],
        splice: Splice,
        genesis: bytes,
        seal: Callable[[int, bytes], bytes] | None = None,
    ) -> list[tuple[int, bytes]]:
        """Stage a batch of entries (their canonical *parts*, without log, seq and prev)
        and return once a chainer, this process or another, has chained them: the
        ``(seq, prev)`` of each, in order. When this log is durable they are durable too
        (no :meth:`sync` is needed): a chain that holds a durable row commits with
        ``synchronous_commit = on``, and PostgreSQL makes a commit visible to other
        sessions only after its WAL flush. See the module doc, "Cross-process group
        commit".

        Raises:
            AuditStoreError: the batch was not chained and never will be (its staged rows
                are gone): its chain transaction failed, the wait timed out, or the server
                failed. If even the withdrawal could not reach the server, the rows stay
                staged and may be chained later (an entry without an outcome, as after a
                crash before the operation).
        """
        if not parts:
            return []
        owner = os.urandom(16)
        n = len(parts)
        how = _Chainer(splice, genesis, seal)
        try:
            self._alive()
            try:
                return self._turn(owner, n, how, parts)
            except _Dropped:
                # the server dropped the connection since the last call (a restart or a
                # failover): withdraw what the staging transaction may have committed (or
                # find it chained), then stage once more on a new connection
                got = self._withdraw(owner, n)
                if got is not None:
                    return got
                owner = os.urandom(16)
                return self._turn(owner, n, how, parts)
        except BaseException as exc:
            try:
                got = self._withdraw(owner, n)
            except psycopg.Error as exc2:
                raise self._err(exc2) from exc
            if got is not None and isinstance(exc, Exception):
                return got  # chained after all, by a chainer that committed in time
            if isinstance(exc, _Dropped):
                exc = exc.__cause__ or exc
            if isinstance(exc, psycopg.Error):
                raise self._err(exc) from exc
            if isinstance(exc, ChainRolledBack):
                raise AuditStoreError(
                    f"The audit log in {self._where} failed: the chain transaction that held "
                    "the entry was rolled back",
                    "Check the server, its disk and locks.",
                ) from exc
            raise

    def _turn(
        self, owner: bytes, n: int, how: _Chainer, stage: Sequence[Sequence[bytes]]
    ) -> list[tuple[int, bytes]]:
        """Two round trips. The first stages the batch (committed at once) and, in a second
        transaction, waits in ``custody_audit_turn`` until the batch is chained (or failed)
        by another chainer, or the head lock is this session's; then, with the lock only,
        reads the head and every staged row (statements whose snapshots start after the
        lock), and collects the batch's rows if they are finished. The second either
        chains every staged row and commits, or commits the collection.

        Raises:
            _Dropped: the connection failed in the first round trip (the staging
                transaction may or may not have committed).
            ChainRolledBack: this batch was in a chain attempt that failed.
            psycopg.Error: from the server (a lock wait longer than the timeout, ...).
        """
        db = self._db
        values = ", ".join(["(%s, %s)"] * len(stage))
        args: list[Any] = []
        for p in stage:
            args += [owner, list(p)]
        try:
            with db.pipeline():
                db.execute("BEGIN")
                db.execute(
                    f"INSERT INTO audit_staging(owner, parts) VALUES {values}",  # noqa: S608
                    args,
                )
                db.execute("COMMIT")
                db.execute("BEGIN")
                if self.durable:  # the collection's commit flushes the WAL past the chain
                    db.execute("SET LOCAL synchronous_commit = on")
                c_turn = db.execute("SELECT custody_audit_turn(%s)", (owner,))
                c_head = db.execute(
                    "SELECT seq, chain FROM audit_entries WHERE "
                    "current_setting('custody.chainer') = 'true' ORDER BY seq DESC LIMIT 1"
                )
                c_rows = db.execute(
                    "SELECT id, owner, parts FROM audit_staging WHERE "
                    "current_setting('custody.chainer') = 'true' AND seq IS NULL "
                    "AND NOT failed ORDER BY id FOR UPDATE"
                )
                c_mine = db.execute(
                    "DELETE FROM audit_staging WHERE owner = %s AND (seq IS NOT NULL OR failed) "
                    "RETURNING seq, prev, failed",
                    (owner,),
                )
                got = bool(c_turn.fetchone()[0])
                head = c_head.fetchone()
                staged = c_rows.fetchall()
                mine = c_mine.fetchall()
        except psycopg.OperationalError as exc:
            self._rollback(db)
            if db.closed or db.broken:
                raise _Dropped from exc
            raise  # e.g. the lock wait ran out (lock_timeout)
        except BaseException:
            self._rollback(db)
            raise
        if any(r[2] or r[0] is None for r in mine):
            self._end(db)
            raise ChainRolledBack
        result = sorted((int(r[0]), bytes(r[1])) for r in mine) if mine else None
        if got and staged:
            chained = self._chain(db, owner, head, staged, how)  # commits (or raises)
            result = result or chained
        else:
            self._end(db)
        if result is None or len(result) != n:
            # neither chained nor staged: cannot be while its writer waits (a batch is one
            # INSERT, seen whole or not at all), unless the rows were deleted behind it
            raise ChainRolledBack
        return result

    def _end(self, db: Any) -> None:
        try:
            db.execute("COMMIT")  # the collection (the lock, if held, for nothing)
        except BaseException:
            self._rollback(db)
            raise

    def _chain(
        self, db: Any, owner: bytes, head: Any, staged: list[Any], how: _Chainer
    ) -> list[tuple[int, bytes]] | None:
        """Chain every staged row in id order inside the open transaction that holds the
        head lock, and commit (synchronously when a row is durable). Returns this batch's
        result if its rows were among them. If the chain fails, the transaction rolls back
        to before the chaining, marks every row of the attempt failed (their callers
        report the failure) and commits that.

        Raises:
            ChainRolledBack: this batch was in the failed attempt.
        """
        seq, prev = (0, how.genesis) if head is None else (int(head[0]) + 1, bytes(head[1]))
        ids = [int(r[0]) for r in staged]
        seqs: list[int] = []
        lines: list[bytes] = []
        chains: list[bytes] = []
        others: list[tuple[int, int, bytes]] = []
        ours: list[tuple[int, bytes]] = []
        ours_ids: list[int] = []
        try:
            for rid, who, parts in staged:
                line, chain = how.splice([bytes(p) for p in parts], seq, prev)
                seqs.append(seq)
                lines.append(line)
                chains.append(chain)
                if bytes(who) == owner:
                    ours.append((seq, prev))
                    ours_ids.append(int(rid))
                else:
                    others.append((int(rid), seq, prev))
                prev = chain
                seq += 1
            mac = None if how.seal is None else how.seal(seqs[-1], chains[-1])
            self._chains += 1
            with db.pipeline():
                # the head lock goes at COMMIT: before the flush, so the next chain is
                # made while this one is flushed (each waiter's own commit waits for it)
                db.execute("SET LOCAL synchronous_commit = off")
                db.execute("SAVEPOINT chain")
                db.execute(
                    "INSERT INTO audit_entries SELECT * FROM "
                    "unnest(%s::bigint[], %s::bytea[], %s::bytea[])",
                    (seqs, lines, chains),
                )
                if others:
                    db.execute(
                        "UPDATE audit_staging s SET seq = v.seq, prev = v.prev FROM "
                        "unnest(%s::bigint[], %s::bigint[], %s::bytea[]) AS v(id, seq, prev) "
                        "WHERE s.id = v.id",
                        ([o[0] for o in others], [o[1] for o in others], [o[2] for o in others]),
                    )
                if ours_ids:
                    db.execute("DELETE FROM audit_staging WHERE id = ANY(%s)", (ours_ids,))
                if mac is not None:
                    db.execute(
                        "INSERT INTO audit_seals VALUES (%s, %s) "
                        "ON CONFLICT(seq) DO UPDATE SET mac=excluded.mac",
                        (seqs[-1], mac),
                    )
                if self._chains % 64 == 1:  # rows whose waiter died after they were chained
                    db.execute(
                        "DELETE FROM audit_staging WHERE (seq IS NOT NULL OR failed) "
                        "AND staged_at < now() - interval '1 hour'"  # STALE
                    )
                db.execute("COMMIT")
        except Exception:  # noqa: BLE001 - any failure (SQL, splice, sealer) fails the attempt
            self._mark_failed(db, ids)
            if ours_ids:
                raise ChainRolledBack from None
            return None  # others' rows failed; this batch was not among them
        except BaseException:
            self._rollback(db)
            raise
        if ours_ids and self.durable:
            db.execute(  # one round trip, after the lock is gone (see sync())
                "BEGIN; SET LOCAL synchronous_commit = on; "
                "SELECT pg_logical_emit_message(true, 'custody.audit', ''); COMMIT"
            )
        return ours if ours_ids else None

    def _mark_failed(self, db: Any, ids: list[int]) -> None:
        """After a failed chain: mark its rows failed, so that every caller of them is
        told. Rows another chainer has chained since (possible only when the COMMIT itself
        failed, which released the lock) are left alone."""
        try:
            if db.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                db.execute("ROLLBACK TO SAVEPOINT chain")  # the head lock is still held
            # else INTRANS (the chain failed before its SQL was sent: still locked) or IDLE
            # (its COMMIT failed: the transaction is gone, and the lock with it)
            db.execute(
                "UPDATE audit_staging SET failed = true WHERE id = ANY(%s) AND seq IS NULL",
                (ids,),
            )
            if db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                db.execute("COMMIT")
        except psycopg.Error:
            # the rows stay staged: their callers' lock waits time out and withdraw them,
            # or a later chainer chains them (then their callers succeed)
            self._rollback(db)

    def _withdraw(self, owner: bytes, n: int) -> list[tuple[int, bytes]] | None:
        """The failure path of :meth:`append_staged`: delete this batch's staged rows. A
        row locked by a chainer is waited for; one it chained is deleted too and reported.
        Returns the batch's result if every row of it was chained (the append succeeded
        after all), else None: then none of it is, or ever will be, in the chain (a caller
        told "failed" must never see its entry chained later)."""
        if self._db.closed or self._db.broken:
            self._db = self._open_writer()
        db = self._db
        self._rollback(db)
        with db.transaction():
            if self.durable:  # rows found chained are reported durable: flush past them
                db.execute("SET LOCAL synchronous_commit = on")
            rows = db.execute(
                "DELETE FROM audit_staging WHERE owner = %s RETURNING seq, prev, failed",
                (owner,),
            ).fetchall()
        if len(rows) != n or any(r[0] is None or r[2] for r in rows):
            return None
        return sorted((int(r[0]), bytes(r[1])) for r in rows)

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

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
import os
import threading
import time
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
    "parts BYTEA[] NOT NULL, seq BIGINT, prev BYTEA, failed BOOLEAN NOT NULL DEFAULT false, "
    "staged_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS audit_staging_by_owner ON audit_staging(owner)",
)
STAGE_CHANNEL = "custody_audit_chained"  # NOTIFY when a chain transaction ends
STALE = "1 hour"  # a chained or failed staged row older than this has no waiter left
Splice = Callable[[Sequence[bytes], int, bytes], tuple[bytes, bytes]]
"""``splice(parts, seq, prev)``: the entry line of staged *parts* at *seq* after the chain
hash *prev*, and its own chain hash (:class:`custody.audit.log.AuditLog` owns the format)."""


_POLL = 0.05  # seconds between a waiter's attempts when no notification comes


class _ChainFailed(Exception):
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

    # -- cross-process group commit --------------------------------------------------
    def append_staged(
        self,
        parts: Sequence[Sequence[bytes]],
        splice: Splice,
        genesis: bytes,
        seal: Callable[[int, bytes], bytes] | None = None,
    ) -> tuple[list[tuple[int, bytes]], int]:
        """Stage a batch of entries (their canonical *parts*, without log, seq and prev)
        and return once a chainer, this process or another, has chained them: the
        ``(seq, prev)`` of each, in order, and a WAL position that :meth:`sync` must reach
        before the entries are durable. See the module doc, "Cross-process group commit".

        Raises:
            AuditStoreError: the batch was not chained and never will be (its staged rows
                are gone): a chain transaction failed, the wait timed out, or the server
                could not be reached. If even the withdrawal could not reach the server,
                the rows stay staged and may be chained later (an entry without outcome,
                as after a crash).
        """
        owner = os.urandom(16)
        try:
            self._alive()
            for _ in self._db.notifies(timeout=0):
                pass  # drop notifications left from an earlier append
            try:
                self._stage(owner, parts)
            except psycopg.OperationalError:
                # the server dropped the connection since the last call (a restart or a
                # failover): withdraw whatever the INSERT may have left, then stage once
                # more on a new connection (as append_batch retries a batch)
                got = self._withdraw(owner, len(parts))
                if got is not None:
                    return got  # it was staged and another writer chained it already
                owner = os.urandom(16)
                self._stage(owner, parts)
            return self._await(owner, len(parts), _Chainer(splice, genesis, seal))
        except BaseException as exc:
            try:
                got = self._withdraw(owner, len(parts))
            except psycopg.Error as exc2:
                raise self._err(exc2) from exc
            if got is not None and isinstance(exc, Exception):
                return got  # chained after all, by a chainer that committed in time
            if isinstance(exc, psycopg.Error):
                raise self._err(exc) from exc
            if isinstance(exc, _ChainFailed):
                raise AuditStoreError(
                    f"The audit log in {self._where} failed: the chain transaction that held "
                    "the entry was rolled back",
                    "Check the server, its disk and locks.",
                ) from exc
            raise

    def _stage(self, owner: bytes, parts: Sequence[Sequence[bytes]]) -> None:
        """One autocommit INSERT of the whole batch (asynchronous commit: the chain's flush
        covers it), with LISTEN in the same implicit transaction, so every chain that can
        include these rows commits after this connection listens."""
        db = self._db
        values = ", ".join(["(%s, %s)"] * len(parts))
        args: list[Any] = []
        for p in parts:
            args += [owner, list(p)]
        with db.pipeline():
            db.execute(f"INSERT INTO audit_staging(owner, parts) VALUES {values}", args)  # noqa: S608
            db.execute(f"LISTEN {STAGE_CHANNEL}")

    def _await(self, owner: bytes, n: int, how: _Chainer) -> tuple[list[tuple[int, bytes]], int]:
        deadline = time.monotonic() + self._timeout
        while True:
            done = self._try_chain(owner, n, how)
            if done is not None:
                return done
            left = deadline - time.monotonic()
            if left <= 0:
                raise AuditStoreError(
                    f"The audit log in {self._where} chained nothing in {self._timeout:g} s",
                    "Check the server and its locks.",
                )
            # a chainer NOTIFYs at its commit; the timeout covers one that died holding
            # the lock (no notification) and any notification missed
            for _ in self._db.notifies(timeout=min(_POLL, left), stop_after=1):
                pass

    def _try_chain(
        self, owner: bytes, n: int, how: _Chainer
    ) -> tuple[list[tuple[int, bytes]], int] | None:
        """One attempt: collect this batch if it was chained (or failed), and chain every
        staged row if the head lock is free. Returns the batch's result, or None to wait.

        Raises:
            _ChainFailed: the chain transaction that held this batch failed.
            psycopg.Error: from the server.
        """
        db = self._db
        try:
            # one round trip: the lock is tried in a statement of its own, and the head and
            # the staged rows are read by later statements (snapshots taken after it), only
            # when it was granted (current_setting is evaluated once, as a one-time filter)
            with db.pipeline():
                db.execute("BEGIN")
                c_lock = db.execute(
                    "SELECT set_config('custody.chainer', "
                    "pg_try_advisory_xact_lock(%s)::text, true)",
                    (AUDIT_LOCK,),
                )
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
                    "RETURNING seq, prev, failed, pg_current_wal_insert_lsn()::text",
                    (owner,),
                )
                got = c_lock.fetchone()[0] == "true"
                head = c_head.fetchone()
                staged = c_rows.fetchall()
                mine = c_mine.fetchall()
        except BaseException:
            self._rollback(db)
            raise
        failed = any(r[2] for r in mine)
        result = None
        if mine and not failed:
            ordered = sorted((int(r[0]), bytes(r[1])) for r in mine)
            result = (ordered, max(_lsn(r[3]) for r in mine))
        if not got or not staged:
            try:
                with db.pipeline():
                    if result is not None or failed:
                        db.execute(f"UNLISTEN {STAGE_CHANNEL}")
                    db.execute("COMMIT")  # the DELETE of this batch's finished rows
            except BaseException:
                self._rollback(db)
                raise
        else:
            chained = self._chain(db, owner, head, staged, how)
            if chained is not None:
                result = chained
        if failed:
            raise _ChainFailed
        if result is not None and len(result[0]) != n:
            raise _ChainFailed  # not all of the batch (cannot happen: one INSERT, one view)
        return result

    def _chain(
        self,
        db: Any,
        owner: bytes,
        head: Any,
        staged: list[Any],
        how: _Chainer,
    ) -> tuple[list[tuple[int, bytes]], int] | None:
        """Chain every staged row in id order inside the open transaction that holds the
        head lock, and commit. Returns this batch's result if its rows were among them.
        If the chain fails the transaction rolls back to before the chaining, marks every
        row of the attempt failed (their callers report the failure) and commits that.

        Raises:
            _ChainFailed: this batch was in the failed attempt.
            psycopg.Error: the server failed in a way the marking could not cover.
        """
        seq, prev = (0, how.genesis) if head is None else (int(head[0]) + 1, bytes(head[1]))
        ids = [int(r[0]) for r in staged]
        entries: list[tuple[int, bytes, bytes]] = []
        others: list[tuple[int, int, bytes]] = []
        ours: list[tuple[int, bytes]] = []
        ours_ids: list[int] = []
        try:
            for rid, who, parts in staged:
                line, chain = how.splice([bytes(p) for p in parts], seq, prev)
                entries.append((seq, line, chain))
                if bytes(who) == owner:
                    ours.append((seq, prev))
                    ours_ids.append(int(rid))
                else:
                    others.append((int(rid), seq, prev))
                prev = chain
                seq += 1
            mac = None if how.seal is None else how.seal(entries[-1][0], entries[-1][2])
            with db.pipeline():
                db.execute("SAVEPOINT chain")
                with db.cursor() as cur:
                    cur.executemany("INSERT INTO audit_entries VALUES (%s, %s, %s)", entries)
                if others:
                    db.execute(
                        "UPDATE audit_staging s SET seq = v.seq, prev = v.prev FROM "
                        "unnest(%s::bigint[], %s::bigint[], %s::bytea[]) AS v(id, seq, prev) "
                        "WHERE s.id = v.id",
                        ([o[0] for o in others], [o[1] for o in others], [o[2] for o in others]),
                    )
                if ours_ids:
                    db.execute("DELETE FROM audit_staging WHERE id = ANY(%s)", (ours_ids,))
                    db.execute(f"UNLISTEN {STAGE_CHANNEL}")
                if mac is not None:
                    db.execute(
                        "INSERT INTO audit_seals VALUES (%s, %s) "
                        "ON CONFLICT(seq) DO UPDATE SET mac=excluded.mac",
                        (entries[-1][0], mac),
                    )
                db.execute(
                    "DELETE FROM audit_staging WHERE (seq IS NOT NULL OR failed) "
                    "AND staged_at < now() - interval '1 hour'"  # STALE
                )
                db.execute("SELECT pg_notify(%s, '')", (STAGE_CHANNEL,))
                db.execute("COMMIT")
                c_lsn = db.execute("SELECT pg_current_wal_insert_lsn()::text")
                lsn = _lsn(c_lsn.fetchone()[0])
        except Exception:  # noqa: BLE001 - any failure (SQL, splice, sealer) fails the attempt
            self._mark_failed(db, ids)
            if ours_ids:
                raise _ChainFailed from None
            return None  # others' rows failed; this batch was not among them
        except BaseException:
            self._rollback(db)
            raise
        return (ours, lsn) if ours_ids else None

    def _mark_failed(self, db: Any, ids: list[int]) -> None:
        """After a failed chain: mark its rows failed, so that every caller of them is
        told (rows another chainer has chained since are left alone) and NOTIFY them."""
        status = db.info.transaction_status
        try:
            if status == psycopg.pq.TransactionStatus.INERROR:
                db.execute("ROLLBACK TO SAVEPOINT chain")  # the head lock is still held
            # INTRANS (the chain failed before its SQL was sent: still locked) or IDLE (its
            # COMMIT failed: the lock is gone, so rows chained since are skipped below)
            db.execute(
                "UPDATE audit_staging SET failed = true WHERE id = ANY(%s) AND seq IS NULL",
                (ids,),
            )
            db.execute("SELECT pg_notify(%s, '')", (STAGE_CHANNEL,))
            if db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                db.execute("COMMIT")
        except psycopg.Error:
            # the rows stay staged; their callers' waits time out and withdraw them, or a
            # later chainer chains them (then their callers succeed)
            self._rollback(db)

    def _withdraw(self, owner: bytes, n: int) -> tuple[list[tuple[int, bytes]], int] | None:
        """The failure path of :meth:`append_staged`: delete this batch's staged rows. A
        row locked by a chainer is waited for; one it chained is deleted too and reported.
        Returns the batch's result if every row of it was chained (the append succeeded
        after all), else None: then none of it is, or ever will be, in the chain (a caller
        told "failed" must never see its entry chained later)."""
        if self._db.closed or self._db.broken:
            self._db = self._open_writer()
        db = self._db
        self._rollback(db)
        with db.pipeline():
            cur = db.execute(
                "DELETE FROM audit_staging WHERE owner = %s "
                "RETURNING seq, prev, failed, pg_current_wal_insert_lsn()::text",
                (owner,),
            )
            db.execute(f"UNLISTEN {STAGE_CHANNEL}")
            rows = cur.fetchall()
        if len(rows) != n or any(r[0] is None or r[2] for r in rows):
            return None
        return sorted((int(r[0]), bytes(r[1])) for r in rows), max(_lsn(r[3]) for r in rows)

    def sync(self, seq: int, *, lsn: int | None = None) -> None:
        """Return once entry *seq* (committed by anyone) is flushed to the server's WAL:
        at once when the flush position already covers the newest commit (or *lsn*, a WAL
        position at or after the entry's commit, from :meth:`append_staged`), else by one
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
                if _lsn(flushed) >= (_lsn(insert) if lsn is None else lsn):
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

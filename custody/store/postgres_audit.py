"""The audit log's storage adapter on PostgreSQL: the ``audit_*`` tables in the deployment's
PostgreSQL store, shared by every custody process and host that writes to it.

The log (:class:`custody.audit.log.AuditLog`) owns the chain, the entries' format and the
checkpoints; this adapter owns the SQL, with the same methods as
:class:`custody.store.sqlite_audit.SqliteAuditStore`, and :meth:`append_staged`, which
the log uses on PostgreSQL.

Cross-process group commit (:meth:`PostgresAuditStore.append_staged`). A writer sends, in one
round trip, three transactions. The first inserts its batch into ``audit_staging``: the
canonical parts of each entry without ``log``, ``seq`` and ``prev``, under a random batch
token (``owner``). The second calls ``custody_audit_chain``, a PL/pgSQL function defined
with the tables, which returns once the batch is chained: it loops until the writer's
rows are chained (or failed) by another writer, or the head lock
(``pg_try_advisory_xact_lock(AUDIT_LOCK)``) is free. Between tries it waits on a doorbell,
:data:`AUDIT_BELL`, which a chainer holds for its whole transaction: a waiter takes it
shared and gives it straight back (inside an exception block, a subtransaction, which
releases the locks taken in it when it rolls back), so every waiter wakes when a chain
ends, at once, not one by one through the head lock's queue. A writer that gets the head
lock is the chainer: in statements whose snapshots start after the lock it reads the head
and every staged row (``FOR UPDATE``, in id order) and, in the server, splices each line
from the log's template (the literal pieces around the parts, prev and seq; the log owns
the format and passes it in) and hashes it with the chain's domain prefix (SHA-256, as
:func:`custody.canonical.domain_hash`), inserts the entries and records each staged row's
``seq`` and ``prev``. Every writer's call ends by deleting its own finished rows and
returning their ``seq`` and ``prev``. That transaction commits asynchronously, which
releases the lock before the WAL flush, so the next chain is made during it; the third
transaction then commits a WAL record with ``synchronous_commit = on`` (as :meth:`sync`),
which returns once the WAL is flushed past it, and so past the chain. The head lock is never
held across a round trip to a client: a chain takes as long as the server needs for it.
Concurrent flushes are folded into few by the server. A writer that holds a sealer seals
the head its own batch left (one more statement). The rules:

* a staged row whose writer died is chained like any other, in id order, never dropped (its
  writer can have acted only after a return, and it returns only once chained);
* a chain that fails (a constraint, a trigger, a deferred check: ``SET CONSTRAINTS ALL
  IMMEDIATE`` runs them inside) rolls back to before it (an exception block), marks every
  row of the attempt ``failed`` while still holding the lock, and that commits: every
  caller of the batch is told (only a COMMIT that fails for another reason, the lock gone
  with it, leaves the other writers' rows staged for the next chain; their callers then
  succeed, truthfully);
* a caller that is about to report failure (its chain failed, its lock wait timed out, the
  server failed) first deletes its own staged rows (:meth:`_withdraw`; the DELETE waits for
  a chainer's row lock). If they were chained after all the append succeeded; otherwise
  none of it can be chained later. Only if the server cannot be reached even for that do
  the rows stay staged, and may then be chained later (an entry without an outcome);
* rows chained or failed more than an hour ago (their writer died) are deleted by a chainer;
* a writer waits at most its timeout for its turn, then withdraws and fails.

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
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg

from custody.errors import CustodyError
from custody.store.postgres_base import connect, describe
from custody.store.sqlite_audit import AuditStoreError, Head, Row

__all__ = ["AUDIT_LOCK", "PostgresAuditStore"]

AUDIT_LOCK = 0x6175646974  # "audit": the chain head's advisory lock
AUDIT_BELL = 0x61756469746E  # "auditn": held by a chainer; its waiters wake at its end
STALE = "1 hour"  # a chained or failed staged row older than this has no writer left

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
    # a writer's turn (append_staged): until the writer's batch is chained (or failed) by
    # another, or the head lock is free for it to take, it waits on the doorbell, a lock
    # that every chainer holds for its whole transaction; a waiter takes it shared and
    # gives it straight back (the exception block is a subtransaction, and a lock taken in
    # one is released when it rolls back), so all the waiters wake together when a chain
    # ends, not one by one through the head lock's queue. With the head lock, statements
    # whose snapshots start after it chain every staged row in id order. The line is the
    # log's template (lits, from custody.audit.log) around the entry's canonical parts, prev
    # and seq; its chain hash is SHA-256 over the domain prefix (tag), the line's length
    # and the line (custody.canonical.domain_hash). A failure of the chain rolls back to
    # before it and marks every row of the attempt failed, the lock still held. Returns the
    # writer's own finished rows, deleted.
    "CREATE OR REPLACE FUNCTION custody_audit_chain(o BYTEA, lits BYTEA[], tag BYTEA, "  # noqa: S608 - constants only
    "genesis BYTEA, wait DOUBLE PRECISION) "
    "RETURNS TABLE(o_seq BIGINT, o_prev BYTEA, o_failed BOOLEAN) LANGUAGE plpgsql AS $f$\n"
    "DECLARE\n"
    "  got BOOLEAN := false;\n"
    "  deadline TIMESTAMPTZ := clock_timestamp() + make_interval(secs => wait);\n"
    "  t TIMESTAMPTZ;\n"
    "  n BIGINT;\n"
    "  p BYTEA;\n"
    "  c BYTEA;\n"
    "  line BYTEA;\n"
    "  ids BIGINT[];\n"
    "  r RECORD;\n"
    "BEGIN\n"
    "  LOOP\n"
    "    EXIT WHEN EXISTS (SELECT 1 FROM audit_staging s WHERE s.owner = o "
    "AND (s.seq IS NOT NULL OR s.failed));\n"
    f"    IF pg_try_advisory_xact_lock({AUDIT_LOCK}) THEN\n"
    "      got := true;\n"
    "      EXIT;\n"
    "    END IF;\n"
    "    IF clock_timestamp() > deadline THEN\n"
    "      RAISE EXCEPTION 'the audit chain lock was not free in time' "
    "USING ERRCODE = '55P03';\n"
    "    END IF;\n"
    "    t := clock_timestamp();\n"
    "    BEGIN\n"
    f"      PERFORM pg_advisory_xact_lock_shared({AUDIT_BELL});\n"
    "      RAISE EXCEPTION 'rung' USING ERRCODE = 'P0001';\n"
    "    EXCEPTION WHEN raise_exception THEN\n"
    "      NULL;\n"
    "    END;\n"
    "    IF clock_timestamp() - t < interval '100 microseconds' THEN\n"
    # the lock holder has not rung yet (it is about to), or it does not ring (a writer on
    # the direct path, an operator): do not spin
    "      PERFORM pg_sleep(0.0005);\n"
    "    END IF;\n"
    "  END LOOP;\n"
    "  IF got THEN\n"
    f"    PERFORM pg_advisory_xact_lock({AUDIT_BELL});\n"
    "    SELECT e.seq, e.chain INTO n, p FROM audit_entries e ORDER BY e.seq DESC LIMIT 1;\n"
    "    IF NOT FOUND THEN\n"
    "      n := -1;\n"
    "      p := genesis;\n"
    "    END IF;\n"
    "    SELECT array_agg(q.id ORDER BY q.id) INTO ids FROM (SELECT s.id FROM audit_staging s "
    "WHERE s.seq IS NULL AND NOT s.failed ORDER BY s.id FOR UPDATE) q;\n"
    "    IF ids IS NOT NULL THEN\n"
    "      BEGIN\n"
    "        FOR r IN SELECT s.id, s.parts FROM audit_staging s WHERE s.id = ANY(ids) "
    "ORDER BY s.id LOOP\n"
    "          n := n + 1;\n"
    "          line := lits[1] || r.parts[1] || lits[2] || r.parts[2] || lits[3] || r.parts[3]"
    " || lits[4] || r.parts[4] || lits[5] || convert_to(encode(p, 'hex'), 'UTF8') || lits[6]"
    " || convert_to(n::text, 'UTF8') || lits[7] || r.parts[5] || lits[8] || r.parts[6]"
    " || lits[9];\n"
    "          c := sha256(tag || int8send(length(line)::bigint) || line);\n"
    "          INSERT INTO audit_entries VALUES (n, line, c);\n"
    "          UPDATE audit_staging s SET seq = n, prev = p WHERE s.id = r.id;\n"
    "          p := c;\n"
    "        END LOOP;\n"
    # deferred checks and triggers run here, inside the block, not at COMMIT (after it the
    # lock would be gone before the rows could be marked)
    "        SET CONSTRAINTS ALL IMMEDIATE;\n"
    "      EXCEPTION WHEN OTHERS THEN\n"
    "        UPDATE audit_staging s SET failed = true WHERE s.id = ANY(ids);\n"
    "      END;\n"
    "    END IF;\n"
    "    IF random() < 0.02 THEN\n"  # rows whose writer died after they were finished
    "      DELETE FROM audit_staging s WHERE (s.seq IS NOT NULL OR s.failed) "
    f"AND s.staged_at < now() - interval '{STALE}';\n"
    "    END IF;\n"
    "  END IF;\n"
    "  RETURN QUERY WITH d AS (DELETE FROM audit_staging s WHERE s.owner = o "
    "AND (s.seq IS NOT NULL OR s.failed) RETURNING s.seq, s.prev, s.failed) "
    "SELECT * FROM d;\n"
    "END\n$f$",
)


class ChainRolledBack(Exception):
    """The chain transaction that held this batch failed (internal)."""


class _Dropped(Exception):
    """The connection was gone before a batch read the head (internal: it is retried)."""


def _hex(b: bytes) -> str:
    """*b* as a bytea expression of hex digits only."""
    return f"decode('{bytes(b).hex()}', 'hex')"


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
                    if "$f$" in stmt and self._same_function(stmt.split("$f$")[1]):
                        continue  # replacing it would reset every session's cached plan
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

    def _same_function(self, body: str) -> bool:
        """Whether ``custody_audit_chain`` already has this *body* (then it is kept)."""
        rows = self._db.execute(
            "SELECT 1 FROM pg_proc WHERE proname = 'custody_audit_chain' AND prosrc = %s",
            (body,),
        ).fetchall()
        return bool(rows)

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
        self, parts: Sequence[Sequence[bytes]], lits: Sequence[bytes], tag: bytes, genesis: bytes
    ) -> list[tuple[int, bytes]]:
        """Stage a batch of entries (their canonical *parts*: actor, details, op, outcome,
        target, time) and return once a chainer, this process or another, has chained
        them: the ``(seq, prev)`` of each, in order. *lits* is the line's template (the
        nine literal pieces around the parts, prev and seq), *tag* the chain hash's domain
        prefix and *genesis* the first entry's prev; the log owns all three. Durable when
        this log is: the WAL is flushed past the chain before this returns. One round trip
        (see the module doc, "Cross-process group commit").

        Raises:
            AuditStoreError: the batch was not chained and never will be (its staged rows
                are gone): its chain failed, the lock wait timed out, or the server failed.
                If even the withdrawal could not reach the server, the rows stay staged and
                may be chained later (an entry without an outcome, as after a crash before
                the operation).
        """
        if not parts:
            return []
        owner = os.urandom(16)
        n = len(parts)
        args = (list(lits), tag, genesis)
        try:
            self._alive()
            try:
                return self._turn(owner, parts, args)
            except _Dropped:
                # the server dropped the connection since the last call (a restart or a
                # failover): withdraw what the staging transaction may have committed (or
                # find it chained), then stage once more on a new connection
                got = self._withdraw(owner, n)
                if got is not None:
                    return got
                owner = os.urandom(16)
                return self._turn(owner, parts, args)
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
        self, owner: bytes, stage: Sequence[Sequence[bytes]], args: tuple[Any, ...]
    ) -> list[tuple[int, bytes]]:
        """One round trip, three transactions: stage the batch and commit; wait for the
        turn in ``custody_audit_chain`` (chain everything staged, or find this batch
        chained by another) and commit asynchronously, which releases the head lock; then
        flush the WAL past it (a durable log only).

        Raises:
            _Dropped: the connection failed (the staging may or may not have committed).
            ChainRolledBack: this batch was in a chain attempt that failed.
            psycopg.Error: from the server (a lock wait longer than the timeout, a failed
                COMMIT, ...).
        """
        db = self._db
        # one simple-protocol query of several statements (no parameters: the values are
        # bytes, written as hex digits, so nothing in them is SQL); cheaper for the client
        # than ten pipelined statements, and the same one round trip
        who = _hex(owner)
        values = ", ".join(f"({who}, ARRAY[{', '.join(_hex(x) for x in p)}])" for p in stage)
        lits, tag, genesis = args
        sql = (
            f"BEGIN; INSERT INTO audit_staging(owner, parts) VALUES {values}; COMMIT; "  # noqa: S608
            "BEGIN; SELECT o_seq, o_prev, o_failed FROM custody_audit_chain("
            f"{who}, ARRAY[{', '.join(_hex(x) for x in lits)}], {_hex(tag)}, {_hex(genesis)}, "
            f"{float(self._timeout)!r}); COMMIT"
        )
        if self.durable:  # as sync(): its commit waits for the WAL past its record
            sql += (
                "; BEGIN; SET LOCAL synchronous_commit = on; "
                "SELECT pg_logical_emit_message(true, 'custody.audit', ''); COMMIT"
            )
        try:
            cur = db.execute(sql)
            mine: list[Any] = []
            while True:
                if cur.description is not None and cur.description[0].name == "o_seq":
                    mine = cur.fetchall()
                if not cur.nextset():
                    break
        except psycopg.OperationalError as exc:
            self._rollback(db)
            if db.closed or db.broken:
                raise _Dropped from exc
            raise  # e.g. the lock wait ran out (lock_timeout)
        except BaseException:
            self._rollback(db)
            raise
        if len(mine) != len(stage) or any(r[2] or r[0] is None for r in mine):
            # failed (or, impossibly, not whole: a batch is one INSERT, seen whole or not)
            raise ChainRolledBack
        return sorted((int(r[0]), bytes(r[1])) for r in mine)

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

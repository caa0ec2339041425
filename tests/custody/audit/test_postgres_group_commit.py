"""Cross-process group commit on PostgreSQL (custody.store.postgres_audit, append_staged):
writers stage their entries and whoever holds the head lock chains every staged one.

On the session's real throwaway server: many processes and threads form one exact chain;
a chain transaction that fails (a trigger made by the test raises once, at the insert or at
COMMIT) fails the callers of its batch and leaves nothing behind; a writer SIGKILLed after
staging has its entry chained by another writer, once; and a caller told that its append
failed never finds the entry chained later (it withdraws its staged row first).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import multiprocessing as mp
import os
import signal
import threading
import time

import psycopg
import pytest

from custody.audit.log import AuditLog
from custody.errors import AuditError
from custody.store.postgres_audit import AUDIT_LOCK

pytestmark = pytest.mark.postgres
PROCS, THREADS, EACH = 8, 2, 40
KEY = b"\x07" * 32


class _Sealer:
    """A software sealer for the tests (the HSM's HMAC key stands in)."""

    def mac(self, data: bytes) -> bytes:
        return hmac.new(KEY, data, hashlib.sha256).digest()


def _entries(url: str) -> list[dict]:
    log = AuditLog(url, durable=False)
    try:
        return [json.loads(x) for x in log.lines()]
    finally:
        log.close()


def _verify(url: str, sealer: _Sealer | None = None) -> None:
    log = AuditLog(url, durable=False)
    try:
        rep = log.verify(sealer=sealer)
        assert rep.ok, rep.problems[:3]
    finally:
        log.close()


def _staged(url: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute("SELECT id, seq, failed FROM audit_staging ORDER BY id").fetchall()


def _writer(url: str, wid: int, start: float) -> None:
    log = AuditLog(url, sealer=_Sealer())
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            for i in range(EACH):
                e = log.append("secret.get", f"svc/{wid}", f"w{wid}.{t}", details={"i": i})
                assert e["seq"] >= 0 and len(e["prev"]) == 64
        except BaseException as exc:
            errors.append(exc)

    while time.time() < start:
        time.sleep(0.001)
    ts = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    log.close()
    if errors:
        raise errors[0]


def test_processes_and_threads_chain_one_exact_log(pg_url: str) -> None:
    AuditLog(pg_url).close()
    ctx = mp.get_context("spawn")
    start = time.time() + 3.0
    procs = [ctx.Process(target=_writer, args=(pg_url, w, start)) for w in range(PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    es = _entries(pg_url)
    total = PROCS * THREADS * EACH
    assert [e["seq"] for e in es] == list(range(total))  # exactly 8N, no gap, no duplicate
    for w, t in itertools.product(range(PROCS), range(THREADS)):
        mine = [e["details"]["i"] for e in es if e["actor"] == f"w{w}.{t}"]
        assert mine == list(range(EACH))  # each writer's own order kept
    actors = [e["actor"].split(".")[0] for e in es]
    assert sum(1 for a, b in itertools.pairwise(actors) if a != b) > PROCS  # interleaved
    assert _staged(pg_url) == []  # every waiter collected its rows
    with psycopg.connect(pg_url, autocommit=True) as c:
        # a chainer UPDATEs only the staged rows of other processes: batches crossed them
        upd = c.execute(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'audit_staging'"
        ).fetchall()
    assert upd[0][0] > 0
    _verify(pg_url, _Sealer())  # the chain, the Merkle tree and the newest seal


# -- a chain transaction that fails -------------------------------------------------------
_AT_INSERT = """
CREATE SEQUENCE boom_fired;
CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF position('"target":"boom"' in convert_from(NEW.line, 'UTF8')) > 0
     AND nextval('boom_fired') = 1 THEN
    RAISE EXCEPTION 'injected fault';
  END IF;
  RETURN NEW;
END $$;
"""
TRIGGERS = {
    # raised inside the chain transaction, at the insert of the entries
    "insert": "CREATE TRIGGER boom BEFORE INSERT ON audit_entries FOR EACH ROW "
    "EXECUTE FUNCTION boom()",
    # a deferred constraint trigger, which would raise at COMMIT
    "commit": "CREATE CONSTRAINT TRIGGER boom AFTER INSERT ON audit_entries "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION boom()",
}


def _one(url: str, target: str, out: mp.Queue, ready, go) -> None:
    log = AuditLog(url)  # opening takes the head lock briefly: before the test holds it
    ready.release()
    go.wait(120)
    try:
        e = log.append("kek.rotate", target, f"p-{target}")
        out.put((target, "ok", e["seq"]))
    except AuditError as exc:
        out.put((target, "failed", str(exc)))
    finally:
        log.close()


def _hold_lock(url: str) -> psycopg.Connection:
    c = psycopg.connect(url, autocommit=True)
    c.execute("SELECT pg_advisory_lock(%s)", (AUDIT_LOCK,))  # no chainer can run
    return c


def _wait_staged(url: str, n: int, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while len([r for r in _staged(url) if r[1] is None]) < n:
        assert time.time() < end, _staged(url)
        time.sleep(0.05)


@pytest.mark.parametrize("where", ["insert", "commit"])
def test_a_failed_chain_fails_every_caller_of_its_batch(pg_url: str, where: str) -> None:
    log = AuditLog(pg_url)
    log.append("kek.rotate", "data", "before")
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(_AT_INSERT)
        c.execute(TRIGGERS[where])
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    targets = ["a", "b", "boom", "c"]
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_one, args=(pg_url, t, out, ready, go)) for t in targets]
    for p in procs:
        p.start()
    for _ in targets:
        assert ready.acquire(timeout=120)
    lock = _hold_lock(pg_url)
    try:
        go.set()
        _wait_staged(pg_url, len(targets))  # all four wait in one batch
    finally:
        lock.close()  # the lock goes with the session: one of them chains all four
    results = {r[0]: r for r in (out.get(timeout=120) for _ in targets)}
    for p in procs:
        p.join(60)
    with psycopg.connect(pg_url, autocommit=True) as c:
        assert c.execute("SELECT last_value FROM boom_fired").fetchall()[0][0] >= 1  # fired
    es = _entries(pg_url)
    chained = [e["target"] for e in es]
    assert chained.count("data") == 1 and len(chained) == len(set(chained))
    for t, (_, outcome, _) in results.items():
        # a caller is told "ok" exactly when its entry is in the chain, once
        assert (outcome == "ok") == (t in chained), (t, results[t], chained)
    # the failed attempt rolled back to before the chain and marked the batch failed while
    # it still held the lock (deferred checks run before COMMIT): every caller of the batch
    # was told, and nothing of it is written
    assert all(r[1] == "failed" for r in results.values()), results
    assert chained == ["data"]
    assert _staged(pg_url) == []  # each caller removed its own staged row
    assert [e["seq"] for e in es] == list(range(len(es)))
    _verify(pg_url)
    e = log.append("kek.rotate", "boom", "after")  # the fault was once: the log goes on
    assert e["seq"] == len(es)
    log.close()
    _verify(pg_url)


# -- a writer that dies while it waits ----------------------------------------------------
def _stage_and_hang(url: str, ready, go) -> None:
    log = AuditLog(url, timeout=600.0)
    ready.release()
    go.wait(120)
    log.append("kek.rotate", "dead", "victim")  # blocked: the test holds the head lock


def _chain_waiters(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'active' AND pid <> pg_backend_pid() "
            "AND query LIKE '%custody_audit_chain(%'"
        ).fetchall()
    return int(rows[0][0])


def test_a_killed_writers_staged_entry_is_chained_by_another(pg_url: str) -> None:
    log = AuditLog(pg_url)
    log.append("kek.rotate", "data", "before")
    with psycopg.connect(pg_url, autocommit=True) as c:
        # the server notices a vanished client while it waits on a lock (else the dead
        # writer's backend would finish the append it was sent, itself, once the lock came)
        db = c.execute("SELECT current_database()").fetchall()[0][0]
        c.execute(f'ALTER DATABASE "{db}" SET client_connection_check_interval = 100')
    ctx = mp.get_context("spawn")
    ready, go = ctx.Semaphore(0), ctx.Event()
    p = ctx.Process(target=_stage_and_hang, args=(pg_url, ready, go))
    p.start()
    assert ready.acquire(timeout=120)
    lock = _hold_lock(pg_url)
    try:
        go.set()
        _wait_staged(pg_url, 1)  # staged and committed, not chained
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        end = time.time() + 30
        while _chain_waiters(pg_url):  # its backend is gone too, with its transaction
            assert time.time() < end
            time.sleep(0.05)
    finally:
        lock.close()
    log.append("kek.rotate", "data", "after")  # this writer chains the dead one's entry too
    es = _entries(pg_url)
    assert [e["actor"] for e in es] == ["before", "victim", "after"]  # never lost, once
    assert [e["seq"] for e in es] == [0, 1, 2]
    # the dead writer's row is marked chained; no waiter is left to collect it (a chainer
    # deletes such rows after an hour)
    assert [(r[1], r[2]) for r in _staged(pg_url)] == [(1, False)]
    log.append("kek.rotate", "data", "later")
    assert [e["actor"] for e in _entries(pg_url)] == ["before", "victim", "after", "later"]
    log.close()
    _verify(pg_url)


# -- a caller told "failed" --------------------------------------------------------------
def test_a_caller_told_failed_never_finds_its_entry_chained_later(pg_url: str) -> None:
    short = AuditLog(pg_url, timeout=1.0)
    lock = _hold_lock(pg_url)
    try:
        t0 = time.monotonic()
        with pytest.raises(AuditError):
            short.append("kek.rotate", "data", "timed-out")  # no chainer can run: it waits
        assert time.monotonic() - t0 < 30
        short.close()
    finally:
        lock.close()
    log = AuditLog(pg_url)
    log.append("kek.rotate", "data", "next")  # a chainer that would chain what is staged
    log.close()
    # the refused entry is not in the log: its caller withdrew its staged row before it
    # said "failed" (without that step the next chainer would chain it)
    assert [e["actor"] for e in _entries(pg_url)] == ["next"]
    assert _staged(pg_url) == []
    _verify(pg_url)


# -- durable before the caller returns ---------------------------------------------------
def _insert_lsn(c: psycopg.Connection) -> str:
    return str(c.execute("SELECT pg_current_wal_insert_lsn()::text").fetchall()[0][0])


def _flushed_past(c: psycopg.Connection, lsn: str) -> bool:
    row = c.execute("SELECT pg_current_wal_flush_lsn() > %s::pg_lsn", (lsn,)).fetchall()
    return bool(row[0][0])


def test_an_append_returns_only_once_its_chain_is_flushed(pg_url: str) -> None:
    # The test server runs with synchronous_commit=off, so only the log's own flush brings
    # the WAL's flush position past the append's commit this soon (the WAL writer waits
    # 200 ms). The commit is written after *before* was read: when the append returns, the
    # flush position must be past it (other databases of the server may write WAL too, so
    # the test compares with a position read before the append, not after it).
    log = AuditLog(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as c:
        for i in range(20):
            before = _insert_lsn(c)
            log.append("kek.rotate", "data", "alice", details={"i": i})
            assert _flushed_past(c, before), i
        # a waiter whose entry another writer chained flushes too (its own commit)
        other = AuditLog(pg_url)
        lock = _hold_lock(pg_url)
        done = threading.Event()

        def wait_in_line() -> None:
            other.append("kek.rotate", "data", "bob")
            done.set()

        t = threading.Thread(target=wait_in_line)
        t.start()
        _wait_staged(pg_url, 1)
        before = _insert_lsn(c)
        lock.close()
        t.join(60)
        assert done.is_set()
        assert _flushed_past(c, before)
        other.close()
    log.close()
    assert [e["actor"] for e in _entries(pg_url)][-1] == "bob"

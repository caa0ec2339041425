"""``cached_reads``: a request's reads may be answered from earlier results only while
nothing has been committed since. Against both adapters (PostgreSQL keeps no memo: the
same properties must hold there trivially), with a second connection and a second
process as the writers that a kept row would hide."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from custody.store import sqlite_base
from tests.custody.store.conftest import Backend


@pytest.fixture
def lite(tmp_path) -> Backend:
    """The SQLite adapter only: the tests of the memo itself (PostgreSQL keeps none)."""
    return Backend("sqlite", str(tmp_path / "c.db"), tmp_path)


def _put(store, value: str) -> None:
    store.set_meta("k", value)


def test_a_commit_by_another_connection_is_read_by_the_next_scope(backend: Backend):
    a, b = backend.open(create=True), backend.open()
    try:
        _put(a, "one")
        with a.cached_reads():
            assert a.get_meta("k") == "one"
        _put(b, "two")  # e.g. a revocation written by the CLI
        with a.cached_reads():
            assert a.get_meta("k") == "two"
        assert a.get_meta("k") == "two"
    finally:
        a.close()
        b.close()


def test_a_commit_by_another_process_is_read_by_the_next_scope(lite: Backend):
    backend = lite
    a = backend.open(create=True)
    try:
        _put(a, "one")
        with a.cached_reads():
            assert a.get_meta("k") == "one"
        code = textwrap.dedent(
            f"""
            import sqlite3
            db = sqlite3.connect({backend.location!r}, isolation_level=None)
            db.execute("UPDATE meta SET value='edited' WHERE key='k'")
            db.close()
            """
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        with a.cached_reads():
            assert a.get_meta("k") == "edited"
    finally:
        a.close()


def test_own_writes_are_read_at_once_even_without_a_transaction(backend: Backend):
    a = backend.open(create=True)
    try:
        _put(a, "one")
        with a.cached_reads():
            assert a.get_meta("k") == "one"
            _put(a, "two")  # in its own transaction
            assert a.get_meta("k") == "two"
            if backend.kind == "sqlite":
                a.conn.execute("UPDATE meta SET value='three' WHERE key='k'")  # autocommit
                assert a.get_meta("k") == "three"
    finally:
        a.close()


def test_reads_inside_a_transaction_or_snapshot_go_to_the_store(backend: Backend):
    a, b = backend.open(create=True), backend.open()
    try:
        _put(a, "one")
        with a.cached_reads():
            assert a.get_meta("k") == "one"
            _put(b, "two")  # committed during this scope: a kept row may still say "one"
            with a.transaction():
                assert a.get_meta("k") == "two"  # what a read-modify-write locks
            with a.read_snapshot():
                assert a.get_meta("k") == "two"
    finally:
        a.close()
        b.close()


def test_a_scope_keeps_its_reads_and_the_caller_cannot_change_them(lite: Backend):
    """What the memo is for: inside one scope, a row read once is not read again (the
    scope's view, as a snapshot taken at its start would give). Outside a scope, nothing
    is kept."""
    a, b = lite.open(create=True), lite.open()
    try:
        _put(a, "one")
        sql = "SELECT value FROM meta WHERE key=?"
        with a.cached_reads():
            first = a._rows(sql, ("k",))
            first.append(("planted",))
            _put(b, "two")
            assert a._rows(sql, ("k",)) == [("one",)]
        assert a._rows(sql, ("k",)) == [("two",)]  # no scope: the file
        with a.cached_reads():
            assert a._rows(sql, ("k",)) == [("two",)]
    finally:
        a.close()
        b.close()


def test_only_plain_selects_are_kept_and_the_memo_is_bounded(lite: Backend, monkeypatch):
    a = lite.open(create=True)
    try:
        _put(a, "0")
        with a.cached_reads():
            for i in range(1, 4):  # a statement that writes runs every time
                got = a._rows("UPDATE meta SET value=? WHERE key='k' RETURNING value", (str(i),))
                assert got == [(str(i),)]
            assert a.get_meta("k") == "3"
            monkeypatch.setattr(sqlite_base, "_MEMO_MAX", 16)
            for i in range(100):
                a._rows("SELECT ?", (i,))
                assert len(a._memo) <= 16
    finally:
        a.close()


def test_interleaved_writers_never_leave_a_scope_reading_an_overwritten_value(
    backend: Backend,
):
    """The property, under random interleavings: a read in a scope entered after a commit
    (by this connection, another one, or a raw SQLite connection) returns that commit's
    value, never an older one."""
    a, b = backend.open(create=True), backend.open()
    raw = (
        sqlite3.connect(backend.location, isolation_level=None)
        if backend.kind == "sqlite"
        else None
    )
    rnd = random.Random(1414)
    try:
        _put(a, "v0")
        last = "v0"
        for i in range(300):
            step = rnd.choice(["read", "read", "other", "own", "raw"])
            if step == "other":
                last = f"b{i}"
                _put(b, last)
            elif step == "own":
                last = f"a{i}"
                _put(a, last)
            elif step == "raw" and raw is not None:
                last = f"r{i}"
                raw.execute("UPDATE meta SET value=? WHERE key='k'", (last,))
            with a.cached_reads():
                assert a.get_meta("k") == last, (i, step)
                assert a.get_meta("k") == last
    finally:
        if raw is not None:
            raw.close()
        a.close()
        b.close()


# -- attacks on the memo (review of 442c545) -------------------------------------------


def test_a_read_after_a_transaction_in_the_scope_is_not_older_than_what_it_saw(
    lite: Backend,
):
    """A transaction inside a scope reads the file (and decides on what it reads, e.g. a
    conditional UPDATE that refuses a TOTP step because another thread has just locked the
    principal out). A plain read after it, in the same scope, must not go back to a row
    kept from before: the re-read after a refused step is how the MFA check learns of a
    concurrent lockout."""
    a, b = lite.open(create=True), lite.open()
    try:
        _put(a, "one")
        with a.cached_reads():
            assert a.get_meta("k") == "one"  # kept
            _put(b, "two")  # another thread's commit
            with a.transaction():
                assert a.get_meta("k") == "two"
                # a conditional write that matches nothing: total_changes does not move
                a.conn.execute("UPDATE meta SET value='x' WHERE key='k' AND value='one'")
            assert a.get_meta("k") == "two"
    finally:
        a.close()
        b.close()


def test_a_read_after_a_snapshot_in_the_scope_is_not_older_than_what_it_saw(lite: Backend):
    """The access seal checks the rows in a read snapshot; the decision then reads them
    outside it. Those reads must not be older than the rows the seal has just checked
    (a row kept from before the check is one the check did not cover)."""
    a, b = lite.open(create=True), lite.open()
    try:
        _put(a, "sealed")
        with a.cached_reads():
            assert a.get_meta("k") == "sealed"
            _put(b, "forged")  # kept by a read between two checks ...
            assert a.get_meta("k") == "sealed"  # (this scope's memo: one view so far)
            _put(b, "sealed-again")
            with a.read_snapshot():  # ... the check reads the file afresh
                assert a.get_meta("k") == "sealed-again"
            assert a.get_meta("k") == "sealed-again"
    finally:
        a.close()
        b.close()


def test_params_equal_in_python_but_not_in_sqlite_are_not_answered_from_one_entry(
    lite: Backend,
):
    """1, 1.0 and True are equal (and hash alike) in Python, but SQLite binds 1.0 as a REAL,
    and a TEXT column compares it as '1.0': a memo keyed on the values alone would answer
    one statement with the other's rows."""
    a = lite.open(create=True)
    try:
        a.set_meta("1", "integer-key")
        a.set_meta("1.0", "real-key")
        sql = "SELECT value FROM meta WHERE key=?"
        with a.cached_reads():
            assert a._rows("SELECT typeof(?)", (1,)) == [("integer",)]
            assert a._rows("SELECT typeof(?)", (1.0,)) == [("real",)]
            assert a._rows(sql, (1,)) == [("integer-key",)]
            assert a._rows(sql, (1.0,)) == [("real-key",)]
            assert a._rows(sql, [1.0]) == [("real-key",)]
        with a.cached_reads():
            assert a._rows(sql, (1.0,)) == [("real-key",)]
            assert a._rows(sql, (1,)) == [("integer-key",)]
    finally:
        a.close()


def test_params_that_cannot_be_a_key_are_read_from_the_file(lite: Backend):
    """bytearray and memoryview are valid SQLite blobs but cannot be dict keys: the read
    must work as it does outside a scope (not fail with a TypeError), and a later change
    must be seen."""
    a, b = lite.open(create=True), lite.open()
    try:
        a.set_meta("k", "one")
        sql = "SELECT value FROM meta WHERE CAST(key AS BLOB)=?"
        with a.cached_reads():
            assert a._rows(sql, (bytearray(b"k"),)) == [("one",)]
            assert a._rows(sql, [memoryview(b"k")]) == [("one",)]
            assert a._rows(sql, (b"k",)) == [("one",)]  # bytes: hashable, kept
        _put(b, "two")
        with a.cached_reads():
            assert a._rows(sql, (bytearray(b"k"),)) == [("two",)]
            assert a._rows(sql, (b"k",)) == [("two",)]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("mode", ["PASSIVE", "FULL", "RESTART", "TRUNCATE"])
def test_a_commit_after_a_checkpoint_or_wal_reset_is_read_by_the_next_scope(
    lite: Backend, mode: str
):
    """After a checkpoint the next writer may restart the WAL from frame 0 (RESTART and
    TRUNCATE force it): the same number of frames as before, at the same offsets. The
    next scope must still see the commit (the WAL index's salts change on a restart)."""
    a, b = lite.open(create=True), lite.open()
    raw = sqlite3.connect(lite.location, isolation_level=None)
    try:
        _put(a, "v0")
        for i in range(1, 6):
            with a.cached_reads():
                assert a.get_meta("k") == f"v{i - 1}"
            # a's scope has ended: nothing of a's holds a read lock, so the WAL can restart
            raw.execute(f"PRAGMA wal_checkpoint({mode})")
            _put(b, f"v{i}")  # one frame, written where the last one was
            with a.cached_reads():
                assert a.get_meta("k") == f"v{i}", (mode, i)
    finally:
        raw.close()
        a.close()
        b.close()


def test_a_raw_edit_of_the_file_is_kept_no_longer_than_sqlite_keeps_its_pages(lite: Backend):
    """The disk operator edits custody.db's bytes in place while the server runs (no SQLite
    commit, so ``data_version`` does not move). A connection's page cache is reset only when
    something is committed, so the edit is not read before one, with or without the memo
    (as before 442c545). Once anything is committed, the next scope must read the file as
    it is: the memo never keeps a row past the page cache's reset (the access seal's next
    check, reading the same file, then sees the edit)."""
    a, b = lite.open(create=True), lite.open()
    try:
        a.set_meta("k", "ORIGINAL-VALUE")
        a.set_meta("other", "x")
        a.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with a.cached_reads():
            assert a.get_meta("k") == "ORIGINAL-VALUE"
        raw = lite.location
        with open(raw, "r+b") as f:
            data = f.read()
            assert data.count(b"ORIGINAL-VALUE") == 1
            f.seek(data.index(b"ORIGINAL-VALUE"))
            f.write(b"EDITED--VALUE!")
        with a.cached_reads():
            kept = a.get_meta("k")
        assert kept == a.get_meta("k")  # the memo answers what the connection would
        b.set_meta("other", "y")  # any commit: the page cache is reset
        with a.cached_reads():
            assert a.get_meta("k") == "EDITED--VALUE!"
    finally:
        a.close()
        b.close()

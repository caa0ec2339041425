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

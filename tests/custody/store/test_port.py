"""The store port against both adapters (SQLite on disk, PostgreSQL on the test server):
transactions, savepoints, rehearsals, the batch claim (two real processes), and the audit
log's own storage adapter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from custody.errors import StorageError
from custody.model import KeyState
from custody.store import Store
from custody.store.rows import NewKek, NewObject, NewRoot, ObjectMove
from custody.store.sqlite_audit import SqliteAuditStore
from tests.conftest import ROOT, cli_env
from tests.custody.store.conftest import Backend

NOW = "2026-01-01T00:00:00+00:00"


def _seed(store: Store, objects: int = 0) -> None:
    store.add_root(NewRoot(version=1, kcv="aaaaaa", epoch=None, blob=None), activate=True, now=NOW)
    store.add_kek(
        NewKek(branch="data", version=1, kcv="bbbbbb", root_version=1, wrapped=b"k1"), now=NOW
    )
    store.add_objects(
        [
            NewObject(
                uid=i.to_bytes(16, "big"),
                kind="dek",
                branch="data",
                kek_version=1,
                wrapped=b"w%d" % i,
                digest=b"d",
                label=None,
            )
            for i in range(objects)
        ],
        now=NOW,
    )


@pytest.fixture
def store(backend: Backend):
    s = backend.open(create=True)
    yield s
    s.close()


@pytest.fixture
def reopen(backend: Backend):
    """A second connection: sees only what was committed."""
    return backend.open


def test_transaction_commits_several_calls_as_one(store: Store, reopen) -> None:
    with store.transaction():
        _seed(store, objects=3)
        other = reopen()
        try:
            assert other.roots() == [] and other.keks() == []  # not visible before commit
        finally:
            other.close()
    other = reopen()
    try:
        assert [r.version for r in other.roots()] == [1]
        assert [(k.branch, k.version, k.objects) for k in other.keks()] == [("data", 1, 3)]
    finally:
        other.close()


def test_transaction_rolls_back_every_call_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        _seed(store, objects=2)
        store.set_meta("k", "v")
        raise RuntimeError("boom")
    assert store.roots() == [] and store.keks() == [] and store.object_counts() == {}
    assert store.get_meta("k") is None
    _seed(store)  # the store is usable again: no transaction was left open
    assert [r.version for r in store.roots()] == [1]


def test_a_failed_nested_transaction_is_a_savepoint(store: Store) -> None:
    with store.transaction():
        store.set_meta("outer", "1")
        with pytest.raises(ValueError), store.transaction():
            store.set_meta("inner", "1")
            raise ValueError("inner fails")
        store.set_meta("after", "1")
    assert store.get_meta("outer") == "1" and store.get_meta("after") == "1"
    assert store.get_meta("inner") is None


def test_a_storage_error_inside_a_transaction_rolls_it_back(store: Store) -> None:
    _seed(store)
    with pytest.raises(StorageError), store.transaction():
        store.set_meta("k", "v")
        # the same root version again: a constraint error, mapped to a typed StorageError
        store.add_root(
            NewRoot(version=1, kcv="cccccc", epoch=None, blob=None), activate=True, now=NOW
        )
    assert store.get_meta("k") is None
    assert [(r.version, r.state) for r in store.roots()] == [(1, KeyState.ACTIVE)]


def test_a_rehearsal_always_rolls_back(store: Store) -> None:
    _seed(store, objects=4)
    with store.rehearsal():
        rows = store.sample_ciphers(10)
        n = store.move_objects([ObjectMove(b"x", 9, NOW, r.id, r.kek_version) for r in rows])
        assert n == 4 and store.count_objects("data", 9) == 4  # real writes inside
    assert store.count_objects("data", 9) == 0 and store.count_objects("data", 1) == 4


def test_a_claim_needs_a_transaction(store: Store) -> None:
    _seed(store, objects=2)
    with pytest.raises(StorageError, match="inside a transaction"):
        store.claim_objects("data", 1, 10)


def test_claimed_rows_are_released_when_the_claim_rolls_back(store: Store) -> None:
    _seed(store, objects=5)
    with pytest.raises(RuntimeError), store.transaction():
        first = store.claim_objects("data", 1, 3)
        store.move_objects([ObjectMove(b"n", 2, NOW, r.id, 1) for r in first])
        raise RuntimeError("worker died mid-batch")
    with store.transaction():
        again = store.claim_objects("data", 1, 3)
    assert [r.id for r in again] == [r.id for r in first]  # nothing was lost or moved
    assert store.count_objects("data", 1) == 5


def test_move_objects_skips_rows_no_longer_under_the_old_version(store: Store) -> None:
    _seed(store, objects=2)
    with store.transaction():
        rows = store.claim_objects("data", 1, 2)
        assert store.move_objects([ObjectMove(b"n", 2, NOW, rows[0].id, 1)]) == 1
        # a stale move of the same row (it is no longer under v1) changes nothing
        assert store.move_objects([ObjectMove(b"m", 3, NOW, rows[0].id, 1)]) == 0
    assert store.count_objects("data", 2) == 1 and store.count_objects("data", 3) == 0


_CLAIMER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from custody.store import open_store
    from custody.store.rows import ObjectMove

    loc, go, out, name = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    store = open_store(loc if loc.startswith("postgresql:") else Path(loc))
    while not go.exists():
        time.sleep(0.005)
    claimed, short = [], []
    while True:
        with store.transaction():
            rows = store.claim_objects("data", 1, 7)
            if not rows:
                break
            time.sleep(0.01)  # hold the claim while the other worker tries to claim
            n = store.move_objects(
                [ObjectMove(b"by-" + name.encode(), 2, "t", r.id, 1) for r in rows]
            )
            if n != len(rows):
                short.append([len(rows), n])
            claimed.append([r.id for r in rows])
        if len(claimed) == 1:
            # both workers must take part whatever the machine's load: after its first
            # batch each waits (outside any transaction) until the other has one too, so the
            # rest of the run is a real race for the same rows
            (out.parent / f"{name}.first").touch()
            other = out.parent / f"{'b' if name == 'a' else 'a'}.first"
            deadline = time.monotonic() + 60
            while not other.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
        time.sleep(0.003)  # let the other worker in between batches
    store.close()
    out.write_text(json.dumps({"batches": claimed, "short": short}))
    """
)


def test_two_processes_never_claim_the_same_row(tmp_path: Path, backend: Backend) -> None:
    db = backend.location
    s = backend.open(create=True)
    total = 280
    _seed(s, objects=total)
    ids = {o.uid for o in s.iter_objects()}
    assert len(ids) == total
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, db, str(go), str(tmp_path / f"{n}.json"), n],
            cwd=ROOT,
            env=cli_env(),
        )
        for n in ("a", "b")
    ]
    time.sleep(0.5)  # both are up and waiting
    go.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0
    results = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b")}
    claimed = {n: [i for b in r["batches"] for i in b] for n, r in results.items()}
    assert results["a"]["short"] == [] and results["b"]["short"] == []
    assert claimed["a"] and claimed["b"], "both workers must have claimed batches"
    assert not set(claimed["a"]) & set(claimed["b"])  # no row handed to both
    assert len(claimed["a"]) + len(claimed["b"]) == total  # and every row to exactly one
    assert len(set(claimed["a"]) | set(claimed["b"])) == total
    assert s.count_objects("data", 1) == 0 and s.count_objects("data", 2) == total
    owners = {o.wrapped for o in s.iter_objects()}
    assert owners == {b"by-a", b"by-b"}
    s.close()


def test_audit_store_rolls_back_an_append_whose_builder_fails(tmp_path: Path) -> None:
    a = SqliteAuditStore(tmp_path / "audit.db", durable=True, timeout=5.0, new_log_id=lambda: "L")
    try:
        a.append(lambda head: (0, b"line-0", b"c0"))
        heads = []

        def bad(head: tuple[int, bytes] | None) -> tuple[int, bytes, bytes]:
            heads.append(head)
            raise ValueError("caller bug")

        with pytest.raises(ValueError):
            a.append(bad)
        assert heads == [(0, b"c0")]  # the builder saw the head, read inside the transaction
        a.append(lambda head: (1, b"line-1", b"c1"))
        assert a.size() == 2 and a.lines() == [b"line-0", b"line-1"]
        with a.snapshot():
            assert a.lines(1) == [b"line-1"]
    finally:
        a.close()
    b = SqliteAuditStore(tmp_path / "audit.db", durable=True, timeout=5.0, new_log_id=lambda: "X")
    try:
        assert b.log_id == "L"  # an existing log keeps its id
    finally:
        b.close()

"""The object counters of migration 5 (``object_tally``: kept by the adapter's inserts and
moves, and by a trigger for deletes) against ``COUNT(*)``, on disk: inserts, re-key moves
(also repeated and stale ones), deletes, a rolled-back transaction, a savepoint, a process
killed mid-transaction, and a store from before the counters migrated with objects in it; on
both adapters (PostgreSQL runs the same migrations through its translation)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from custody.errors import StorageError
from custody.store.postgres_dialect import translate
from custody.store.rows import NewKek, NewObject, NewRoot, ObjectMove
from custody.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore, statements
from tests.conftest import ROOT, cli_env
from tests.custody.store.conftest import Backend
from tests.custody.store.conftest import RawStore as Store

NOW = "2026-01-01T00:00:00+00:00"
# the counters' migration, found by content (its number is the lead's to assign at merge)
TALLY = next(i for i, m in enumerate(MIGRATIONS) if "CREATE TABLE object_tally" in m)


def _obj(i: int, *, branch: str = "data", version: int = 1, kind: str = "dek") -> NewObject:
    return NewObject(
        uid=i.to_bytes(16, "big"),
        kind=kind,
        branch=branch,
        kek_version=version,
        wrapped=b"w%d" % i,
        digest=b"d",
        label=None,
    )


def _truth(s: Store) -> dict[tuple[str, int, str], int]:
    rows = s.query("SELECT branch, kek_version, kind, COUNT(*) FROM objects GROUP BY 1, 2, 3")
    return {(r[0], r[1], r[2]): r[3] for r in rows}


def _tally(s: Store) -> dict[tuple[str, int, str], int]:
    rows = s.query("SELECT branch, kek_version, kind, n FROM object_tally WHERE n != 0")
    return {(r[0], r[1], r[2]): r[3] for r in rows}


def assert_counts_match(s: Store) -> None:
    # plain ints on both adapters (PostgreSQL's SUM of BIGINT is NUMERIC: JSON would say "0")
    assert all(type(n) is int for n in s.object_counts().values())
    assert all(type(k.objects) is int for k in s.keks())
    truth = _truth(s)
    assert _tally(s) == truth
    by_kind: dict[str, int] = {}
    for (_b, _v, kind), n in truth.items():
        by_kind[kind] = by_kind.get(kind, 0) + n
    assert s.object_counts() == by_kind
    for k in s.keks():
        assert k.objects == sum(
            n for (b, v, _), n in truth.items() if (b, v) == (k.branch, k.version)
        )


@pytest.fixture
def store(backend: Backend):
    s = backend.open(create=True)
    s.add_root(NewRoot(version=1, kcv="aaaaaa", epoch=None, blob=None), activate=True, now=NOW)
    for branch in ("data", "secrets"):
        for v in (1, 2):
            s.add_kek(
                NewKek(branch=branch, version=v, kcv="bbbbbb", root_version=1, wrapped=b"k"),
                now=NOW,
            )
    yield s
    s.close()


def test_splitter_keeps_trigger_bodies_whole() -> None:
    stmts = statements(MIGRATIONS[TALLY])
    triggers = [s for s in stmts if s.startswith("CREATE TRIGGER")]
    assert len(triggers) == 1 and triggers[0].rstrip().endswith("END;")
    assert statements("CREATE TABLE a(x); ; CREATE TABLE b(y);") == [
        "CREATE TABLE a(x);",
        "CREATE TABLE b(y);",
    ]
    with pytest.raises(ValueError):
        statements("CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1;")


def test_counters_follow_inserts_moves_and_deletes(store: Store) -> None:
    assert store.object_counts() == {} and all(k.objects == 0 for k in store.keks())
    store.add_objects([_obj(i) for i in range(300)], now=NOW)
    store.add_objects([_obj(1000 + i, kind="secret") for i in range(20)], now=NOW)
    store.add_objects([_obj(2000 + i, branch="secrets", version=2) for i in range(7)], now=NOW)
    assert_counts_match(store)
    assert store.object_counts() == {"dek": 307, "secret": 20}
    # a re-key batch moves data/v1 -> v2; a move of a row no longer under old_version is a no-op
    with store.transaction():
        claimed = store.claim_objects("data", 1, 120)
        moves = [ObjectMove(c.wrapped + b"!", 2, NOW, c.id, 1) for c in claimed]
        assert store.move_objects(moves) == 120
        assert store.move_objects(moves) == 0
    assert_counts_match(store)
    assert {(k.branch, k.version): k.objects for k in store.keks()}[("data", 2)] >= 120
    # the same id twice in one call acts as two moves in order; a move back; a no-op move
    a, b = claimed[0].id, claimed[1].id
    twice = [
        ObjectMove(b"x", 3, NOW, a, 2),
        ObjectMove(b"y", 1, NOW, a, 3),
        ObjectMove(b"z", 2, NOW, b, 2),  # old == new: rewritten, not recounted
        ObjectMove(b"q", 5, NOW, b, 9),  # stale: b is not under v9
    ]
    assert store.move_objects(twice) == 3
    assert store.query("SELECT kek_version, wrapped FROM objects WHERE id=?", (a,))[0][:] == (
        1,
        b"y",
    )
    assert_counts_match(store)
    # deletes are counted by a trigger, so a repair's raw DELETE keeps them exact too
    with store.tx() as c:
        c.execute("DELETE FROM objects WHERE kind='secret' AND id % 2 = 0")
        c.execute("DELETE FROM objects WHERE branch='secrets'")
    assert_counts_match(store)
    with store.tx() as c:
        c.execute("DELETE FROM objects")
    assert_counts_match(store)
    assert store.object_counts() == {} and all(k.objects == 0 for k in store.keks())


def test_rolled_back_transaction_and_savepoint_leave_counters_exact(store: Store) -> None:
    store.add_objects([_obj(i) for i in range(50)], now=NOW)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction():
        store.add_objects([_obj(100 + i) for i in range(30)], now=NOW)
        claimed = store.claim_objects("data", 1, 10)
        store.move_objects([ObjectMove(c.wrapped, 2, NOW, c.id, 1) for c in claimed])
        assert store.object_counts() == {"dek": 80}  # seen inside the transaction
        raise Boom
    assert_counts_match(store)
    assert store.object_counts() == {"dek": 50}
    with store.transaction():
        store.add_objects([_obj(200 + i) for i in range(5)], now=NOW)
        with pytest.raises(Boom), store.transaction():  # a savepoint
            store.add_objects([_obj(300 + i) for i in range(9)], now=NOW)
            raise Boom
    assert_counts_match(store)
    assert store.object_counts() == {"dek": 55}
    # a failing statement inside a batch (duplicate uid) rolls back the whole batch
    with pytest.raises(StorageError):
        store.add_objects([_obj(900), _obj(901), _obj(0)], now=NOW)
    assert_counts_match(store)
    assert store.object_counts() == {"dek": 55}


def test_process_killed_mid_transaction_leaves_counters_exact(store: Store, backend) -> None:
    store.add_objects([_obj(i) for i in range(40)], now=NOW)
    code = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from custody.store import open_store
        from custody.store.rows import NewObject, ObjectMove
        loc = {backend.location!r}
        s = open_store(loc if loc.startswith("postgresql:") else Path(loc))
        tx = s.transaction()  # kept referenced: never exited
        tx.__enter__()
        s.add_objects([NewObject(uid=(5000 + i).to_bytes(16, "big"), kind="dek", branch="data",
                       kek_version=1, wrapped=b"x", digest=b"d", label=None)
                       for i in range(25)], now="t")
        rows = s.claim_objects("data", 1, 30)
        s.move_objects([ObjectMove(r.wrapped, 2, "t", r.id, 1) for r in rows])
        s.conn.execute("DELETE FROM objects WHERE id < 5")
        print(sum(s.object_counts().values()), flush=True)
        os._exit(9)  # dies holding the open write transaction: no COMMIT, no ROLLBACK
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 9, r.stderr
    assert r.stdout.strip() == "61"  # 40 + 25 - 4 inside the doomed transaction
    fresh = backend.open()
    try:
        assert_counts_match(fresh)
        assert fresh.object_counts() == {"dek": 40}
        assert {(k.branch, k.version): k.objects for k in fresh.keks()}[("data", 1)] == 40
    finally:
        fresh.close()


def test_counters_migration_seeds_from_existing_objects(tmp_path: Path) -> None:
    db = tmp_path / "before.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for script in MIGRATIONS[:TALLY]:
        for stmt in statements(script):
            conn.execute(stmt)
    conn.execute(f"PRAGMA user_version={TALLY}")
    conn.executemany(
        "INSERT INTO objects(uid, kind, branch, kek_version, wrapped, digest, created, updated) "
        "VALUES(?, ?, ?, ?, X'00', X'00', 't', 't')",
        [
            (i.to_bytes(16, "big"), "dek" if i % 3 else "secret", "data", 1 + i % 2)
            for i in range(99)
        ],
    )
    conn.close()
    s = SqliteStore.open(db)
    try:
        assert s.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        assert_counts_match(s)
        assert s.object_counts() == {"dek": 66, "secret": 33}
        s.add_objects([_obj(1000)], now=NOW)  # and the triggers run from then on
        assert_counts_match(s)
    finally:
        s.close()


@pytest.mark.postgres
def test_counters_migration_seeds_from_existing_objects_on_postgresql(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE custody_schema(version BIGINT NOT NULL)")
        for script in MIGRATIONS[:TALLY]:
            for stmt in translate(script):
                conn.execute(stmt)
        conn.execute("INSERT INTO custody_schema VALUES (%s)", (TALLY,))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO objects(uid, kind, branch, kek_version, wrapped, digest, created, "
                "updated) VALUES(%s, %s, %s, %s, %s, %s, 't', 't')",
                [
                    (
                        i.to_bytes(16, "big"),
                        "dek" if i % 3 else "secret",
                        "data",
                        1 + i % 2,
                        b"\0",
                        b"\0",
                    )
                    for i in range(99)
                ],
            )
    s = Backend("postgresql", pg_url, Path("/nonexistent")).open()
    try:
        assert s.schema_version() == SCHEMA_VERSION
        assert_counts_match(s)
        assert s.object_counts() == {"dek": 66, "secret": 33}
        s.add_objects([_obj(1000)], now=NOW)
        with s.tx() as c:
            c.execute("DELETE FROM objects WHERE id < 10")  # the translated trigger counts it
        assert_counts_match(s)
        assert sum(s.object_counts().values()) == 100 - 9
    finally:
        s.close()

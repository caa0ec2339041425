"""Group commit: threads and processes batched into shared durable commits, fail-closed.

A fault is injected into a real commit with a SQLite trigger that RAISEs on one entry: the
whole batch that carries it rolls back and every caller of that batch gets AuditError;
nothing is half-written and the chain still verifies.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import rfc8785

from custody.audit.log import AuditLog
from custody.canonical import canonical_bytes
from custody.errors import AuditError

BOOM = (
    "CREATE TRIGGER boom BEFORE INSERT ON entries "
    'WHEN CAST(NEW.line AS TEXT) LIKE \'%"target":"boom"%\' '
    "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
)


def _sql(path: Path, *stmts: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    for s in stmts:
        db.execute(s)
    db.close()


def _entries(log: AuditLog) -> list[dict]:
    return [json.loads(x) for x in log.lines()]


def _horizon(path: Path) -> int:
    return int.from_bytes(Path(f"{path}-sync").read_bytes()[:8], "big", signed=True)


def test_threads_share_durable_commits(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path)  # durable: every append waits for the group fsync
    n, each = 16, 25
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            for i in range(each):
                e = log.append("secret.get", f"svc/{t}", f"t{t}", details={"i": i})
                assert _horizon(path) >= e["seq"]  # durable before the caller returns
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:1]
    es = _entries(log)
    assert [e["seq"] for e in es] == list(range(n * each))
    for k in range(n):
        assert [e["details"]["i"] for e in es if e["actor"] == f"t{k}"] == list(range(each))
    rep = log.verify()
    assert rep.ok, rep.problems[:3]
    log.close()


def test_spliced_lines_are_exactly_canonical(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db", durable=False)
    odd = 'ünï "q" \\ \n\t\x01 \u2028 😀'
    e = log.append(odd, odd, odd, details={"z": [1, {"b": odd, "a": None}], "a": True})
    (line,) = log.lines()
    assert line == canonical_bytes(json.loads(line)) == canonical_bytes(e)
    assert log.verify().ok


def test_a_failed_commit_fails_every_caller_of_its_batch(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path, timeout=30)
    for i in range(3):
        log.append("secret.get", "svc/db", "alice", details={"i": i})
    _sql(path, BOOM)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the leader will wait for the write lock...
    results: dict[int, object] = {}

    def run(i: int) -> None:
        try:
            target = "boom" if i == 5 else f"svc/{i}"
            results[i] = log.append("secret.get", target, f"t{i}")
        except AuditError as exc:
            results[i] = exc

    ts = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    deadline = time.time() + 10
    while len(log._queue) < 7 and time.time() < deadline:  # ...while the others queue
        time.sleep(0.01)
    blocker.execute("ROLLBACK")
    blocker.close()
    for t in ts:
        t.join()
    assert len(results) == 8
    assert all(isinstance(r, AuditError) for r in results.values()), results
    assert all("refused" in r.title for r in results.values() if isinstance(r, AuditError))
    assert log.size() == 3  # nothing of the batch was written
    _sql(path, "DROP TRIGGER boom")
    log.append("secret.get", "svc/db", "alice")
    es = _entries(log)
    assert [e["seq"] for e in es] == [0, 1, 2, 3]
    assert log.verify().ok
    log.close()


def _proc_writer(path: str, wid: int, start: float, out: mp.Queue) -> None:
    log = AuditLog(path, timeout=60)
    while time.time() < start:
        time.sleep(0.001)
    got: dict[str, list[int]] = {"ok": [], "failed": []}
    lock = threading.Lock()

    def run(t: int) -> None:
        for i in range(30):
            n = t * 1000 + i
            boom = wid == 1 and i % 10 == 3
            try:
                log.append(
                    "secret.get", "boom" if boom else f"svc/{wid}", f"w{wid}", details={"n": n}
                )
                with lock:
                    got["ok"].append(n)
            except AuditError:
                with lock:
                    got["failed"].append(n)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    log.close()
    out.put((wid, got))


def test_processes_and_threads_with_a_fault_in_one_process(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    AuditLog(path).close()
    _sql(path, BOOM)
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()
    start = time.time() + 0.5
    ps = [ctx.Process(target=_proc_writer, args=(str(path), w, start, q)) for w in range(4)]
    for p in ps:
        p.start()
    got = dict(q.get(timeout=300) for _ in ps)
    for p in ps:
        p.join(60)
        assert p.exitcode == 0
    log = AuditLog(path)
    es = _entries(log)
    assert [e["seq"] for e in es] == list(range(len(es)))
    assert not any(e["target"] == "boom" for e in es)
    for w in range(4):
        mine = sorted(e["details"]["n"] for e in es if e["actor"] == f"w{w}")
        assert mine == sorted(got[w]["ok"])  # every success is there once, no failure is
        if w != 1:
            assert got[w]["failed"] == []  # other processes' batches are not touched
    assert len(got[1]["failed"]) >= 9  # at least the 9 faulty entries themselves failed
    assert log.verify().ok
    log.close()


def test_unopenable_lock_files_refuse(tmp_path: Path) -> None:
    (tmp_path / "audit.db-lock").mkdir()  # cannot be opened as a lock file
    with pytest.raises(AuditError):
        AuditLog(tmp_path / "audit.db")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "plain text/with:punct,{}[]",
        "tab\there",
        "del\x7f",
        'q"uote',
        "back\\slash",
        "ünï",
        "\u2028",
        0,
        -1,
        2**53 - 1,
        -(2**53) + 1,
        True,
        None,
        {},
        {"b": 1, "a": "x", "c": None, "d": False, "e": True},
        {"é": 1},
        {"a": {"nested": 1}},
        {"a": [1, 2]},
        {"a": 1.5},
        {"a": 'q"uote'},
        {"b": 1, "B": 2, "_": 3, "~": 4},
    ],
)
def test_fast_canonical_parts_match_rfc8785(value: object) -> None:
    # the audit entries' parts go through canonical_bytes, whose direct encoder must write
    # the library's bytes (tests/custody/test_canonical_fast.py: random values)
    assert canonical_bytes(value) == rfc8785.dumps(value)  # type: ignore[arg-type]


def test_unsafe_integers_are_refused_like_rfc8785() -> None:
    for v in (2**53, -(2**53), 10**20, {"a": 2**60}):
        with pytest.raises(ValueError):
            canonical_bytes(v)
        with pytest.raises(rfc8785.CanonicalizationError):
            rfc8785.dumps(v)


def test_a_rolled_back_database_does_not_inherit_the_flush_horizon(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path)
    for i in range(5):
        log.append("secret.get", "svc", "alice", details={"i": i})
    log.close()
    _sql(path, "DELETE FROM entries WHERE seq >= 2")  # e.g. an older copy restored
    assert _horizon(path) == 4
    log = AuditLog(path)  # the horizon is lowered to the newest entry on open...
    assert _horizon(path) == 1
    e = log.append("secret.get", "svc", "alice")  # ...so seq 2 is flushed, not skipped
    assert e["seq"] == 2 and _horizon(path) == 2
    log.close()

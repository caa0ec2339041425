"""The audit log on PostgreSQL (custody.store.postgres_audit): four writer processes append
into one exact chain (no gap, no fork, each writer's own order kept), durable group commit,
checkpoints and proofs as on SQLite; and what an insider who bypasses the log achieves."""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing as mp
import time

import psycopg
import pytest

from custody.audit.log import AuditLog
from custody.audit.records import check_proof
from custody.audit.signers import Ed25519Signer, TrustKey
from custody.errors import AuditError

pytestmark = pytest.mark.postgres
PROCS, EACH = 4, 300
SIGNER = Ed25519Signer.from_seed("audit-key", b"\x09" * 32)


def _writer(url: str, wid: int, start: float, durable: bool) -> None:
    log = AuditLog(url, durable=durable)
    while time.time() < start:
        time.sleep(0.001)
    for i in range(EACH):
        log.append("secret.get", f"svc/{wid}", f"worker{wid}", details={"i": i})
    log.close()


@pytest.mark.parametrize("durable", [True, False])
def test_four_processes_append_one_exact_chain(pg_url: str, durable: bool) -> None:
    AuditLog(pg_url).close()  # the tables and the log id, once
    ctx = mp.get_context("spawn")
    start = time.time() + 1.5
    procs = [ctx.Process(target=_writer, args=(pg_url, w, start, durable)) for w in range(PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    log = AuditLog(pg_url)
    try:
        assert log.size() == PROCS * EACH
        entries = [json.loads(x) for x in log.lines()]
        assert [e["seq"] for e in entries] == list(range(PROCS * EACH))  # no gap
        actors = [e["actor"] for e in entries]
        switches = sum(1 for a, b in itertools.pairwise(actors) if a != b)
        assert switches > PROCS, "the writers must really have interleaved"
        for w in range(PROCS):  # every writer's entries all present, in its own order
            mine = [e["details"]["i"] for e in entries if e["actor"] == f"worker{w}"]
            assert mine == list(range(EACH))
        rep = log.verify()
        assert rep.ok, rep.problems[:3]  # one chain: every prev is the entry before
        log.checkpoint(SIGNER)
        rep = log.verify([TrustKey.of(SIGNER)])
        assert rep.ok and rep.checkpoints == 1, rep.problems[:3]
        for i in (0, 1, PROCS * EACH - 1):
            check_proof(log.proof(i), [TrustKey.of(SIGNER)])
    finally:
        log.close()


def test_an_insider_writing_around_the_log_is_caught(pg_url: str) -> None:
    log = AuditLog(pg_url)
    for i in range(5):
        log.append("kek.rotate", "data", "alice", details={"i": i})
    log.close()
    with psycopg.connect(pg_url, autocommit=True) as c:
        # a fork: a second entry 3 is refused by the key, whoever writes it
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute("INSERT INTO audit_entries VALUES (3, %s, %s)", (b'{"seq":3}', b"\x00" * 32))
        # rewriting an entry in place (hiding what alice did) breaks the chain
        (line,) = c.execute("SELECT line FROM audit_entries WHERE seq=2").fetchall()[0]
        c.execute(
            "UPDATE audit_entries SET line=%s WHERE seq=2",
            (bytes(line).replace(b"alice", b"mallo"),),
        )
    log = AuditLog(pg_url)
    try:
        rep = log.verify()
        assert not rep.ok and rep.problems
    finally:
        log.close()


def test_an_unreachable_store_refuses_the_append(pg_url: str) -> None:
    bad = pg_url.replace("port=", "port=1")  # nothing listens there
    with pytest.raises(AuditError):
        AuditLog(bad)


def test_a_long_lived_log_survives_a_dropped_connection(pg_url: str) -> None:
    log = AuditLog(pg_url)
    try:
        log.append("kek.rotate", "data", "alice")
        with psycopg.connect(pg_url, autocommit=True) as admin:  # a failover drops them all
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        # The first append after the drop may be refused: its flush cannot be confirmed on a
        # connection that died (after a server crash an unflushed entry may be gone), and a
        # refused append refuses its operation. The log then reconnects by itself.
        with contextlib.suppress(AuditError):
            log.append("kek.rotate", "data", "bob")
        log.append("kek.rotate", "data", "carol")  # reconnected, the same chain
        entries = [json.loads(x) for x in log.lines()]
        assert [e["seq"] for e in entries] == list(range(len(entries)))
        assert entries[0]["actor"] == "alice" and entries[-1]["actor"] == "carol"
        assert log.verify().ok
    finally:
        log.close()

"""Several writer processes at once: no lost entry, no forked chain, proofs verify."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

from custody.audit.log import AuditLog
from custody.audit.records import check_proof
from custody.audit.signers import Ed25519Signer, TrustKey

PROCS, EACH = 4, 2000
SIGNER = Ed25519Signer.from_seed("audit-key", b"\x09" * 32)


def _writer(path: str, wid: int, start: float) -> None:
    # durable=False: commits are still atomic and serialised by SQLite's write lock (what
    # this test is about); fsync cost per commit is measured in bench/bench_transcript.py.
    log = AuditLog(path, durable=False)
    while time.time() < start:
        time.sleep(0.001)
    for i in range(EACH):
        log.append("secret.get", f"svc/{wid}", f"worker{wid}", details={"i": i})
    log.close()


def test_four_processes_8000_entries(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.db")
    AuditLog(path).close()  # create the schema once
    ctx = mp.get_context("fork")
    start = time.time() + 0.3
    procs = [ctx.Process(target=_writer, args=(path, w, start)) for w in range(PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    log = AuditLog(path)
    assert log.size() == PROCS * EACH
    entries = [json.loads(x) for x in log.lines()]
    assert [e["seq"] for e in entries] == list(range(PROCS * EACH))
    for w in range(PROCS):  # every writer's entries all present, in its own order
        mine = [e["details"]["i"] for e in entries if e["actor"] == f"worker{w}"]
        assert mine == list(range(EACH))
    log.checkpoint(SIGNER)
    rep = log.verify([TrustKey.of(SIGNER)])
    assert rep.ok, rep.problems[:3]
    for i in (0, 1, 4095, 4096, 7999):
        check_proof(log.proof(i), [TrustKey.of(SIGNER)])

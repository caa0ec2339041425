"""Benchmark: custody re-key throughput vs a bare SQLite + AES-GCM loop, side by side.

    python bench/bench_rekey.py [--objects 1000000] [--batch 10000] [--reps 3]

Builds a real deployment (SoftHSMv2 token, dev root, data KEK v1), writes N wrapped DEKs
straight into SQLite with :func:`custody.keys.wrapped.seal` (not through the CLI), rotates to
v2, and snapshots that store. Each repetition copies the snapshot twice and runs, in
alternating order:

* **custody**: :func:`custody.rekey.jobs.run` (lease, job checkpoint, envelope checks, retirement;
  post-job verification off, measured separately);
* **bare**: the same batch size and durability (WAL, synchronous=FULL, one transaction per
  batch) doing only SELECT, AES-GCM decrypt+encrypt and UPDATE.

Prints medians and the ratio (target >= 0.60).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custody.clock import iso, utcnow
from custody.config import Home
from custody.deployment import init_deployment, open_deployment
from custody.keys import wrapped as envelope
from custody.keys.hierarchy import object_context, object_digest
from custody.rekey import jobs as rekey
from custody.store.rows import NewObject
from custody.store.sqlite import SqliteStore

PIN, SO_PIN = "bench-pin-1234", "bench-so-5678"


def populate(home: Home, n: int) -> tuple[bytes, bytes]:
    init_deployment(home, user_pin=PIN, so_pin=SO_PIN, dev_root=True)
    with open_deployment(home, PIN) as dep:
        h = dep.hierarchy
        h.create_kek_version("data")
        k1 = h.kek_plaintext("data", 1, for_encrypt=True)
        now = iso(utcnow())
        step = 100_000
        for start in range(0, n, step):
            rows = []
            for _ in range(min(step, n - start)):
                uid, dek = os.urandom(16), os.urandom(32)
                rows.append(
                    NewObject(
                        uid=uid,
                        kind="dek",
                        branch="data",
                        kek_version=1,
                        wrapped=envelope.seal(k1, "data", 1, dek, object_context(uid)),
                        digest=object_digest(uid, dek),
                        label=None,
                    )
                )
            dep.store.add_objects(rows, now=now)
        h.create_kek_version("data")
        k2 = h.kek_plaintext("data", 2, for_encrypt=True)
        assert isinstance(dep.store, SqliteStore)  # this bench compares against bare SQLite
        dep.store.query("PRAGMA wal_checkpoint(TRUNCATE)")
    return k1, k2


def bare(db: Path, k1: bytes, k2: bytes, batch: int) -> tuple[int, float]:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    dec, enc = AESGCM(k1).decrypt, AESGCM(k2).encrypt
    h1, h2 = envelope.header("data", 1), envelope.header("data", 2)
    hl = len(h1)
    a1, a2 = h1 + b"custody/obj/", h2 + b"custody/obj/"
    moved = 0
    t0 = time.perf_counter()
    while True:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(
            "SELECT id, uid, wrapped FROM objects WHERE branch='data' AND "
            "kek_version=1 ORDER BY id LIMIT ?",
            (batch,),
        ).fetchall()
        if not rows:
            conn.execute("COMMIT")
            break
        nonces = os.urandom(12 * len(rows))
        out = []
        for i, (oid, uid, w) in enumerate(rows):
            n = nonces[12 * i : 12 * i + 12]
            out.append(
                (h2 + n + enc(n, dec(w[hl : hl + 12], w[hl + 12 :], a1 + uid), a2 + uid), oid)
            )
        conn.executemany("UPDATE objects SET wrapped=?, kek_version=2 WHERE id=?", out)
        conn.execute("COMMIT")
        moved += len(rows)
    dt = time.perf_counter() - t0
    conn.close()
    return moved, dt


def custody_run(home: Home, batch: int) -> tuple[int, float, float]:
    with open_deployment(home, PIN) as dep:
        h = dep.hierarchy
        t0 = time.perf_counter()
        rep = rekey.run(h, dep.config, branch="data", batch=batch, verify="none")
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        checked, failed = rekey.verify_branch(h, "data", 2, sample=1000)
        vt = time.perf_counter() - t1
        assert not failed and checked == 1000
    return sum(j.moved for j in rep.jobs), dt, vt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="custody re-key vs bare loop")
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workdir")
    a = ap.parse_args(argv)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-rekey-"))
    home = Home(work / "home")
    t0 = time.perf_counter()
    k1, k2 = populate(home, a.objects)
    print(f"populated {a.objects} objects in {time.perf_counter() - t0:.1f} s")
    snap = work / "snapshot.db"
    shutil.copy(home.db_path, snap)
    c_rates, b_rates = [], []
    for r in range(a.reps):
        order = ("custody", "bare") if r % 2 == 0 else ("bare", "custody")
        for which in order:
            if which == "custody":
                for suffix in ("-wal", "-shm"):
                    Path(str(home.db_path) + suffix).unlink(missing_ok=True)
                shutil.copy(snap, home.db_path)
                n, dt, vt = custody_run(home, a.batch)
                c_rates.append(n / dt)
                print(
                    f"rep {r}: custody {n} in {dt:.2f} s = {n / dt:,.0f}/s "
                    f"(verify sample of 1000: {vt * 1000:.0f} ms)"
                )
            else:
                bdb = work / "bare.db"
                shutil.copy(snap, bdb)
                n, dt = bare(bdb, k1, k2, a.batch)
                b_rates.append(n / dt)
                print(f"rep {r}: bare    {n} in {dt:.2f} s = {n / dt:,.0f}/s")
    cm, bm = statistics.median(c_rates), statistics.median(b_rates)
    print(
        f"median custody {cm:,.0f} objects/s, bare {bm:,.0f} objects/s, "
        f"ratio {cm / bm:.2f} (target >= 0.60)"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

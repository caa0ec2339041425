"""Benchmark: durable audit appends on PostgreSQL (1, 4 and 8 writer processes), against a
bare psycopg insert loop in the same run, on a throwaway server with PostgreSQL's durable
defaults (``fsync=on``, ``synchronous_commit=on``; tests/pg_fixtures.py).

Run: ``.venv/bin/python bench/bench_pg.py [--seconds 3] [--writers 1,4,8] [--rounds 3]``.

Side by side, for W concurrent writer processes, appends per second in total:
  * bare psycopg: each process an autocommit connection doing ``INSERT`` of one 250-byte
    line per commit (one durable commit per entry: the baseline the issue names);
  * custody ``AuditLog`` on the PostgreSQL store, each process its own handle: every
    ``append`` returns only when its entry is durable, in the one exact chain. It stages
    the entry and whoever holds the head lock chains every staged entry of every process
    in one transaction; each writer's own commit then waits for the WAL flush (cross-process
    group commit, custody/store/postgres_audit.py);
  * the same, on the previous path ("direct"): each process's batch is its own transaction
    under the head lock (asynchronous commit), then a flush of its own;
  * custody ``AuditLog`` with W threads sharing one handle in one process (the log's
    in-process group commit: one transaction and one flush per batch of waiting threads).
The custody log is verified after every run (entries contiguous, chain intact).

With ``--threads-per-process T`` each custody process (both paths) appends from T threads
sharing its handle, so 8 processes keep 8T appends in flight.

Re-key (``--rekey N``, 0 to skip): one home on PostgreSQL and one on SQLite, each with N
DEKs; every measured run rotates the data KEK and runs ``custody rekey run --verify none``
(``--workers W`` on PostgreSQL for W = 1 and 2), and reports the move phase's objects/s
from ``--json``. The ratios (2 workers / 1 worker; PostgreSQL 1 worker / SQLite) are taken
within one run. Configurations run round-robin for ``--rounds`` rounds; figures are medians.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from custody.audit.log import AuditLog  # noqa: E402
from tests.pg_fixtures import PgServer, start_server  # noqa: E402

LINE = b"x" * 250
KINDS = ("bare", "custody", "direct", "threads")
THREADS_PER_PROCESS = 1  # --threads-per-process: appends in flight per custody process


def _until(t: float) -> None:
    while time.time() < t:
        time.sleep(0.0005)


def _bare(url: str, start: float, stop: float, out: Any) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        _until(start)
        n = 0
        while time.time() < stop:
            c.execute("INSERT INTO bare(line) VALUES (%s)", (LINE,))
            n += 1
    out.put(n)


def _custody(url: str, wid: int, start: float, stop: float, out: Any, direct: bool) -> None:
    log = AuditLog(url, durable=True)
    if direct:
        log._pg = None  # the previous path: append_batch under the head lock, then sync()
    counts = [0] * THREADS_PER_PROCESS

    def work(t: int) -> None:
        _until(start)
        while time.time() < stop:
            log.append("secret.get", f"svc/{wid}", f"w{wid}.{t}", details={"i": counts[t]})
            counts[t] += 1

    ts = [threading.Thread(target=work, args=(t,)) for t in range(THREADS_PER_PROCESS)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    log.close()
    out.put(sum(counts))


def _threads(url: str, writers: int, seconds: float) -> int:
    log = AuditLog(url, durable=True)
    start = time.time() + 0.3
    stop = start + seconds
    counts = [0] * writers

    def work(w: int) -> None:
        _until(start)
        while time.time() < stop:
            log.append("secret.get", f"svc/{w}", f"t{w}", details={"i": counts[w]})
            counts[w] += 1

    ts = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    log.close()
    return sum(counts)


def _run(kind: str, server: PgServer, writers: int, seconds: float) -> float:
    url = server.url(server.new_database())
    if kind == "threads":
        AuditLog(url).close()
        total = _threads(url, writers, seconds)
        _check(url, total)
        return total / seconds
    if kind == "bare":
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE bare(id BIGSERIAL PRIMARY KEY, line BYTEA NOT NULL)")
    else:
        AuditLog(url).close()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start = time.time() + 1.0
    stop = start + seconds
    procs = [
        ctx.Process(
            target=_bare if kind == "bare" else _custody,
            args=(url, start, stop, q)
            if kind == "bare"
            else (url, w, start, stop, q, kind == "direct"),
        )
        for w in range(writers)
    ]
    for p in procs:
        p.start()
    total = sum(q.get(timeout=seconds + 120) for _ in procs)
    for p in procs:
        p.join(60)
    if kind in ("custody", "direct"):
        _check(url, total)
    return total / seconds


def _check(url: str, total: int) -> None:
    log = AuditLog(url)
    try:
        assert log.size() == total, (log.size(), total)
        seqs = [json.loads(x)["seq"] for x in log.lines()]
        assert seqs == list(range(total))
        rep = log.verify()
        assert rep.ok, rep.problems[:3]
    finally:
        log.close()


def _rekey_home(root: Path, store: str | None, n: int) -> tuple[Path, Path]:
    from tests.conftest import run_cli
    from tests.rekey_fixtures import cli, write_pins

    root.mkdir(parents=True)
    pins = write_pins(root / "pins")
    home = root / "home"
    extra = ("--store", store) if store else ()
    r = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--dev-root", *extra)
    assert r.returncode == 0, r.stderr
    cli(home, pins, "kek", "rotate", "--branch", "data")
    cli(home, pins, "dek", "generate", "--count", str(n), timeout=1200)
    return home, pins


def _rekey_rate(home: Path, pins: Path, workers: int) -> float:
    from tests.rekey_fixtures import cli, cli_json

    cli(home, pins, "kek", "rotate", "--branch", "data")
    out = cli_json(home, pins, "rekey", "run", "--verify", "none", "--workers", str(workers))
    (job,) = out["jobs"]
    return float(job["rate_per_s"])


def _spread(xs: list[float]) -> str:
    return f"{min(xs):,.2f}-{max(xs):,.2f}" if max(xs) < 100 else f"{min(xs):,.0f}-{max(xs):,.0f}"


def rekey_bench(server: PgServer, n: int, rounds: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="custody-bench-rekey-"))
    pg_home = _rekey_home(base / "pg", server.url(server.new_database()), n)
    sq_home = _rekey_home(base / "sqlite", None, n)
    runs: dict[str, list[float]] = {"sqlite": [], "pg1": [], "pg2": []}
    for _ in range(rounds):
        runs["sqlite"].append(_rekey_rate(*sq_home, 1))
        runs["pg1"].append(_rekey_rate(*pg_home, 1))
        runs["pg2"].append(_rekey_rate(*pg_home, 2))
    out: dict[str, Any] = {k: statistics.median(v) for k, v in runs.items()}
    out["runs"] = runs
    # ratios within each round (the same load on the shared machine), then their spread
    out["pg1_vs_sqlite"] = [a / b for a, b in zip(runs["pg1"], runs["sqlite"], strict=True)]
    out["pg2_vs_pg1"] = [a / b for a, b in zip(runs["pg2"], runs["pg1"], strict=True)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--writers", default="1,4,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rekey", type=int, default=100_000, metavar="N")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--threads-per-process", type=int, default=1, metavar="T",
        help="threads appending in each custody process (processes kinds only)",
    )  # fmt: skip
    args = ap.parse_args()
    global THREADS_PER_PROCESS
    THREADS_PER_PROCESS = args.threads_per_process  # read by the forked writers
    writers = [int(w) for w in args.writers.split(",")]
    base = Path(tempfile.mkdtemp(prefix="custody-bench-pg-"))
    gen = start_server(base / "pg", durable=True)
    server = next(gen)
    results: dict[tuple[str, int], list[float]] = {}
    rekey: dict[str, Any] = {}
    try:
        if args.rekey:
            rekey = rekey_bench(server, args.rekey, args.rounds)
        for _ in range(args.rounds):
            for w in writers:
                for kind in KINDS:
                    results.setdefault((kind, w), []).append(_run(kind, server, w, args.seconds))
    finally:
        for _ in gen:
            pass
    rows: list[dict[str, Any]] = []
    for w in writers:
        med = {k: statistics.median(results[(k, w)]) for k in KINDS}
        rows.append(
            {"writers": w, **med, "ratio": med["custody"] / med["bare"],
             "runs": {k: results[(k, w)] for k in KINDS}}
        )  # fmt: skip
    if args.json:
        print(json.dumps({"audit": rows, "rekey": rekey}))
        return 0
    if rekey:
        print(f"re-key, {args.rekey:,} objects, objects/s (move phase), medians")
        print(f"  SQLite, 1 worker       {rekey['sqlite']:>9,.0f}")
        print(
            f"  PostgreSQL, 1 worker   {rekey['pg1']:>9,.0f}  "
            f"({rekey['pg1'] / rekey['sqlite']:.2f}x SQLite)"
        )
        print(
            f"  PostgreSQL, 2 workers  {rekey['pg2']:>9,.0f}  "
            f"({rekey['pg2'] / rekey['pg1']:.2f}x 1 worker)"
        )
        for k, label in (("sqlite", "SQLite 1"), ("pg1", "PG 1"), ("pg2", "PG 2")):
            print(f"  spread {label:<9} {_spread(rekey['runs'][k])} objects/s")
        for k, label in (("pg1_vs_sqlite", "PG 1 / SQLite"), ("pg2_vs_pg1", "PG 2 / PG 1")):
            xs = rekey[k]
            print(f"  per-round {label}: median {statistics.median(xs):.2f}, {_spread(xs)}")
    print("durable audit appends on PostgreSQL (fsync=on), appends/s, medians")
    print(
        f"{'writers':>7} {'bare psycopg':>13} {'custody procs':>14} {'ratio':>6} "
        f"{'direct procs':>13} {'custody threads':>16} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{r['writers']:>7} {r['bare']:>13,.0f} {r['custody']:>14,.0f} {r['ratio']:>6.2f} "
            f"{r['direct']:>13,.0f} {r['threads']:>16,.0f} {r['threads'] / r['bare']:>6.2f}"
        )
    for r in rows:
        sp = ", ".join(f"{k} {_spread(v)}" for k, v in r["runs"].items())
        print(f"  spread, {r['writers']} writers: {sp}")
    one = rows[0]["bare"]
    for r in rows:
        print(
            f"  {r['writers']} writers vs one bare writer (one commit per entry): processes "
            f"{r['custody'] / one:.2f}x (direct {r['direct'] / one:.2f}x), "
            f"threads {r['threads'] / one:.2f}x"
        )
    if len(results[("bare", writers[0])]) > 1:  # per round: the same load on the machine
        for r in rows:
            n = len(r["runs"]["bare"])
            per = {
                k: [r["runs"][k][i] / results[("bare", writers[0])][i] for i in range(n)]
                for k in ("custody", "direct", "threads")
            }
            sp = ", ".join(f"{k} {statistics.median(v):.2f} ({_spread(v)})" for k, v in per.items())
            print(f"  per round, {r['writers']} writers / one bare writer: {sp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

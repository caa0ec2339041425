"""Benchmark: durable audit appends (1, 4, 16 writers) and streaming ``audit verify``.

Run: ``.venv/bin/python bench/bench_audit.py [--seconds 2] [--verify 100000,1000000]``.

Side by side, in one run, on the same disk:
  * appends per second, total over W concurrent writers (W = 1, 4, 16), each writer
    appending one entry at a time and waiting until it is durable:
      - raw write+fsync (one 250-byte record and one fsync per append, W processes);
      - naive SQLite (WAL, synchronous=FULL, one BEGIN IMMEDIATE/INSERT/COMMIT per entry,
        W processes, each its own connection, SQLite's busy handler);
      - custody ``AuditLog`` with W processes (each its own log handle);
      - custody ``AuditLog`` with W threads sharing one handle (one process);
    and, as the ceiling, SQLite group commit (one process, 1,000 entries per transaction);
  * ``custody audit verify`` (the library call the command makes, in one process and with
    blocks verified on a second process too, and the command itself as a subprocess with
    its peak RSS, its worker's and both together's) at N entries against the raw SHA-256
    chain over the same lines streamed from the same database (``h = SHA-256(h || line)``),
    round-robin over ``--rounds`` rounds.
Every custody log is verified after its run (entries contiguous, chain intact). The append
configurations run round-robin for ``--rounds`` rounds and report medians, since the disk
is shared with whatever else runs. Peak RSS of the command is its VmHWM; its worker's is
VmRSS sampled every 20 ms (the worker's own VmHWM ends with it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from custody.audit.log import AuditLog  # noqa: E402
from custody.canonical import canonical_bytes  # noqa: E402

REC = b"x" * 250
WRITERS = (1, 4, 16)
_KINDS = ("raw_fsync", "naive_sqlite", "custody_procs", "custody_threads")


# -- append workloads: each returns the number of durable appends in the window ---------
def _until(start: float) -> None:
    while time.time() < start:
        time.sleep(0.0005)


def _raw_writer(path: str, start: float, stop: float, out: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    _until(start)
    n = 0
    while time.time() < stop:
        os.write(fd, REC)
        os.fsync(fd)
        n += 1
    os.close(fd)
    out.put(n)


def _naive_writer(path: str, start: float, stop: float, out: Any) -> None:
    db = sqlite3.connect(path, timeout=60, isolation_level=None)
    db.execute("PRAGMA synchronous=FULL")
    _until(start)
    n = 0
    while time.time() < stop:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO e(line) VALUES (?)", (REC,))
        db.execute("COMMIT")
        n += 1
    db.close()
    out.put(n)


def _custody_writer(path: str, start: float, stop: float, out: Any) -> None:
    log = AuditLog(path)
    _until(start)
    n = 0
    pid = os.getpid()
    while time.time() < stop:
        log.append("secret.get", "svc/db", f"w{pid}", details={"i": n})
        n += 1
    log.close()
    out.put(n)


def _procs(target: Any, path: str, w: int, seconds: float) -> float:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start = time.time() + 0.3 + 0.02 * w
    stop = start + seconds
    ps = [ctx.Process(target=target, args=(path, start, stop, q)) for _ in range(w)]
    for p in ps:
        p.start()
    total = sum(q.get(timeout=seconds + 120) for _ in ps)
    for p in ps:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a writer failed ({p.exitcode})")
    return float(total) / seconds


def custody_threads(path: str, w: int, seconds: float) -> float:
    log = AuditLog(path)
    counts = [0] * w
    start = time.time() + 0.2
    stop = start + seconds

    def run(i: int) -> None:
        _until(start)
        n = 0
        while time.time() < stop:
            log.append("secret.get", "svc/db", f"t{i}", details={"i": n})
            n += 1
        counts[i] = n

    ts = [threading.Thread(target=run, args=(i,)) for i in range(w)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    log.close()
    return sum(counts) / seconds


def naive_db(path: str) -> str:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE e(seq INTEGER PRIMARY KEY, line BLOB NOT NULL)")
    db.close()
    return path


def sqlite_group_commit(path: str, seconds: float, batch: int = 1000) -> float:
    db = sqlite3.connect(naive_db(path), isolation_level=None)
    db.execute("PRAGMA synchronous=FULL")
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO e(line) VALUES (?)", [(REC,)] * batch)
        db.execute("COMMIT")
        n += batch
    rate = n / (time.perf_counter() - t0)
    db.close()
    return rate


def check_log(path: str) -> int:
    with AuditLog(path) as log:
        rep = log.verify()
        if not rep.ok:
            raise SystemExit(f"the benchmark's log does not verify: {rep.problems[:3]}")
        return rep.entries


# -- verify ---------------------------------------------------------------------------
def fill(path: Path, n: int) -> None:
    """A log of *n* entries written the way AuditLog writes them, in big batches, with a
    signed checkpoint at n/2 and at n (so verify recomputes Merkle roots, not just the
    chain)."""
    from custody.audit.signers import Ed25519Signer

    signer = Ed25519Signer.from_seed("bench", b"\x01" * 32)
    log = AuditLog(path, durable=False)
    step = 20_000
    for lo in range(0, n, step):
        _bulk(log, list(range(lo, min(n, lo + step))))
        if lo < n // 2 <= lo + step:
            log.checkpoint(signer)
    log.checkpoint(signer)
    log.close()


def _bulk(log: AuditLog, idx: list[int]) -> None:
    # Many threads would batch naturally; for speed, queue directly through one leader
    # (the entries' bytes are exactly what append() makes: same _Pending, same _lead).
    from custody.audit import log as logmod

    reqs = []
    for i in idx:
        entry = {
            "actor": f"user{i % 50}",
            "details": {"i": i, "kind": "read"},
            "op": "secret.get",
            "outcome": "ok" if i % 7 else "denied",
            "target": f"svc/{i % 300}/db",
            "time": 1_800_000_000 + i,
        }
        fixed = tuple(
            canonical_bytes(entry[k])
            for k in ("actor", "details", "op", "outcome", "target", "time")
        )
        reqs.append(logmod._Pending(entry, fixed, "bench"))
    with log._cv:
        log._queue.extend(reqs)
        log._writing = True
    log._lead()
    if any(r.error for r in reqs):
        raise SystemExit("fill failed")


def raw_chain(path: Path) -> float:
    return raw_chain_cpu(path)[0]


def raw_chain_cpu(path: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the raw chain."""
    db = sqlite3.connect(path)
    t, c = time.perf_counter(), time.process_time()
    h = b"\0" * 32
    sha = hashlib.sha256
    cur = db.execute("SELECT line FROM entries ORDER BY seq")
    while rows := cur.fetchmany(4096):
        for (line,) in rows:
            h = sha(h + line).digest()
    dt, dc = time.perf_counter() - t, time.process_time() - c
    db.close()
    return dt, dc


def verify_lib(path: Path, parallel: bool) -> tuple[float, bool]:
    dt, ok, _, _ = verify_lib_cpu(path, parallel)
    return dt, ok


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def verify_lib_cpu(path: Path, parallel: bool) -> tuple[float, bool, float, float]:
    """(wall seconds, verdict, CPU seconds of this process, CPU seconds of the worker)."""
    t, c, w = time.perf_counter(), time.process_time(), _children_cpu()
    with AuditLog(path) as log:
        ok = log.verify(parallel=parallel).ok
    return time.perf_counter() - t, ok, time.process_time() - c, _children_cpu() - w


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} s [{min(xs):.2f}-{max(xs):.2f}]"


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            return next((int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")), 0)
    except (OSError, ValueError):
        return 0


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", encoding="ascii", errors="replace") as f:
                    st = f.read()
            except OSError:
                continue
            if int(st.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def verify_cli(home: Path) -> tuple[float, float, float, float, int]:
    """(seconds, peak RSS MiB of the command's process (VmHWM), peak RSS MiB of its worker
    process and of the two together (VmRSS sampled every 20 ms), exit code) of
    ``custody audit verify`` as a subprocess."""
    code = (
        "import runpy, sys; sys.argv = ['custody', 'audit', 'verify', '--home', "
        f"{str(home)!r}]\n"
        "try:\n    runpy.run_module('custody_cli', run_name='__main__')\n"
        "except SystemExit as e:\n    rc = e.code\n"
        "else:\n    rc = 0\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]\n"
        "sys.stderr.write(f'RSS {hwm[0].split()[1]}\\n')\n"
        "sys.exit(rc)\n"
    )
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    worker = both = 0
    while proc.poll() is None:
        kids = _children(proc.pid)
        w = sum(_rss_kib(k) for k in kids)
        worker, both = max(worker, w), max(both, w + _rss_kib(proc.pid))
        time.sleep(0.02)
    dt = time.perf_counter() - t
    err = proc.stderr.read() if proc.stderr is not None else ""
    rss = [ln for ln in err.splitlines() if ln.startswith("RSS ")]
    own = int(rss[-1].split()[1]) / 1024 if rss else float("nan")
    return dt, own, worker / 1024, both / 1024, proc.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="window per append run")
    ap.add_argument("--writers", default=",".join(map(str, WRITERS)))
    ap.add_argument("--rounds", type=int, default=3, help="round-robin rounds (medians)")
    ap.add_argument("--verify", default="100000,1000000", help="entry counts, comma-separated")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    res: dict[str, Any] = {"appends": {}, "verify": {}}
    rows: list[tuple[Any, ...]] = []
    with tempfile.TemporaryDirectory(dir=ROOT) as d:
        dd = Path(d)
        # The disk is shared: run every configuration once per round, round-robin, and
        # report medians over the rounds, so that a slow moment hits all of them alike.
        runs: dict[tuple[int, str], list[float]] = {}
        gcs = []
        writers = [int(x) for x in a.writers.split(",") if x]
        for r in range(a.rounds if writers else 0):
            gcs.append(sqlite_group_commit(str(dd / f"gc{r}.db"), a.seconds))
            for w in writers:
                tag = f"{w}-{r}"
                runs.setdefault((w, "raw_fsync"), []).append(
                    _procs(_raw_writer, str(dd / f"raw{tag}.bin"), w, a.seconds)
                )
                runs.setdefault((w, "naive_sqlite"), []).append(
                    _procs(_naive_writer, naive_db(str(dd / f"naive{tag}.db")), w, a.seconds)
                )
                cp = str(dd / f"cp{tag}.db")
                AuditLog(cp).close()
                runs.setdefault((w, "custody_procs"), []).append(
                    _procs(_custody_writer, cp, w, a.seconds)
                )
                check_log(cp)
                ct = str(dd / f"ct{tag}.db")
                runs.setdefault((w, "custody_threads"), []).append(
                    custody_threads(ct, w, a.seconds)
                )
                check_log(ct)
        res["sqlite_group_commit_per_s"] = statistics.median(gcs) if gcs else float("nan")
        for w in writers:
            med = {k: statistics.median(runs[(w, k)]) for k in _KINDS}
            res["appends"][w] = med
            rows.append((w, *(med[k] for k in _KINDS)))
        for n in (int(x) for x in a.verify.split(",") if x):
            home = dd / f"home{n}"
            home.mkdir()
            fill(home / "audit.db", n)
            # round-robin, as for the appends: raw chain, one process, two processes
            raws: list[float] = []
            ones: list[float] = []
            twos: list[float] = []
            # CPU seconds: the raw chain's, and the larger of the two processes' (the time
            # two free cores would take; a loaded machine stretches the wall times)
            raw_cpu: list[float] = []
            two_cpu: list[float] = []
            for _ in range(max(1, a.rounds)):
                dt, dc = raw_chain_cpu(home / "audit.db")
                raws.append(dt)
                raw_cpu.append(dc)
                for par, out in ((False, ones), (True, twos)):
                    dt, ok, mine, worker = verify_lib_cpu(home / "audit.db", par)
                    if not ok:
                        raise SystemExit(f"verify of {n} entries failed")
                    out.append(dt)
                    if par:
                        two_cpu.append(max(mine, worker))
            cli_s, rss, wrss, both, rc = verify_cli(home)
            if rc != 0:
                raise SystemExit(f"verify of {n} entries failed (exit {rc})")
            raw_s = statistics.median(raws)
            res["verify"][n] = {
                "raw_chain_s": raws,
                "verify_lib_one_process_s": ones,
                "verify_lib_two_processes_s": twos,
                "verify_cli_s": cli_s,
                "verify_cli_peak_rss_mib": rss,
                "verify_cli_worker_peak_rss_mib": wrss,
                "verify_cli_both_peak_rss_mib": both,
                "rate_vs_raw_one_process": raw_s / statistics.median(ones),
                "rate_vs_raw_two_processes": raw_s / statistics.median(twos),
                "raw_chain_cpu_s": raw_cpu,
                "verify_two_processes_max_cpu_s": two_cpu,
                "cpu_rate_vs_raw_two_processes": statistics.median(raw_cpu)
                / statistics.median(two_cpu),
                "load_average": os.getloadavg(),
            }
    res["bench_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    gc = res["sqlite_group_commit_per_s"]
    print(f"SQLite group commit (1 process, 1,000 entries/commit): {gc:,.0f}/s")
    print("durable appends/s, total over W writers (medians of round-robin rounds):")
    print(
        f"{'writers':>7} {'raw fsync':>10} {'naive SQL':>10} {'custody P':>10} "
        f"{'custody T':>10} {'P/naive':>8} {'T/naive':>8} {'P/raw':>6}"
    )
    for w, raw, naive, procs, threads in rows:
        print(
            f"{w:>7} {raw:>10,.0f} {naive:>10,.0f} {procs:>10,.0f} {threads:>10,.0f} "
            f"{procs / naive:>7.2f}x {threads / naive:>7.2f}x {procs / raw:>5.2f}x"
        )
    print("verify, medians [min-max] over the rounds (the machine's load average is shown;")
    print("two processes help only when a second core is free):")
    for n, v in res["verify"].items():
        print(
            f"verify {n:>9,} entries: raw SHA-256 chain {_spread(v['raw_chain_s'])}; "
            f"library, one process {_spread(v['verify_lib_one_process_s'])} = "
            f"{v['rate_vs_raw_one_process']:.2f}x raw; two processes "
            f"{_spread(v['verify_lib_two_processes_s'])} = "
            f"{v['rate_vs_raw_two_processes']:.2f}x raw; command {v['verify_cli_s']:.2f} s / "
            f"{v['verify_cli_peak_rss_mib']:.0f} MiB peak (worker "
            f"{v['verify_cli_worker_peak_rss_mib']:.0f} MiB, both "
            f"{v['verify_cli_both_peak_rss_mib']:.0f} MiB); load {v['load_average'][0]:.1f}"
        )
        print(
            f"  CPU seconds: raw chain {_spread(v['raw_chain_cpu_s'])}; two processes, the "
            f"busier one {_spread(v['verify_two_processes_max_cpu_s'])} = "
            f"{v['cpu_rate_vs_raw_two_processes']:.2f}x raw with two free cores"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

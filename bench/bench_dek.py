"""Benchmark: ``dek verify``, ``dek generate`` and ``status`` against their baselines, side by
side in one run (issue 14, item 4).

    python bench/bench_dek.py [--sizes 100000,1000000] [--runs 3] [--status-runs 7]

For each size N it builds a real deployment (SoftHSMv2 token, dev root, data KEK v1) and fills
it with ``custody dek generate --count N`` run as a subprocess, recording that process's peak
RSS (``VmHWM`` of the CLI process itself, read as it exits: ``wait4``'s ``ru_maxrss`` would
include the benchmark's own memory, copied into the child by ``fork`` before ``exec``).
Then, interleaved over ``--runs`` repetitions, medians and [min-max]:

* **dek verify --all (CLI)**: ``custody dek verify --all`` as a subprocess, wall time
  (interpreter start, imports, token login, audit entries, HSM unwrap of the KEK included);
* **verify_objects (library)**: :meth:`KeyHierarchy.verify_objects` in process, KEK cache
  emptied first, so the HSM unwrap of each KEK version is inside the time;
* **bare loop** (the baseline the goal is measured against): one ``sqlite3`` connection,
  ``SELECT uid, wrapped, digest FROM objects`` in batches of 10,000, one pre-built ``AESGCM``,
  and per object the checks custody makes: the envelope header compared byte for byte, the
  GCM decrypt with AAD header||"custody/obj/"||uid, and the SHA-256 object digest
  (``domain_hash`` with its prefix hashed once and copied) compared with the stored one;
* **bare decrypt only** (for reference, not the goal's baseline): the same ciphertexts already
  in a Python list, ``AESGCM.decrypt`` alone: no SQL, no header check, no digest.

``custody status`` is timed on an empty home (KEK, no objects) and on the largest home, both as
the CLI subprocess (token login included) and as :func:`custody.status.deployment_status` in
process without the token. ``dek generate --json`` (which keeps the 16-byte uids to print them)
is measured once at the largest size as well.

Goals: verify >= 0.80x the bare loop; generate peak RSS < 100 MB at 1M; status at 1M within
1.2x of the empty home.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custody.config import Home
from custody.deployment import init_deployment, open_deployment
from custody.keys import wrapped as envelope
from custody.status import deployment_status

PIN, SO_PIN = "bench-pin-1234", "bench-so-5678"
ROOT = Path(__file__).resolve().parents[1]
# runs custody_cli.main() as ``python -m custody_cli`` does, then writes its own VmHWM (peak RSS
# of this process image, after exec) to $BENCH_HWM_FILE
_CLI = (
    "import sys\n"
    "from custody_cli import main\n"
    "try:\n"
    "    rc = main()\n"
    "finally:\n"
    "    import os\n"
    "    hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM:')][0]\n"
    "    open(os.environ['BENCH_HWM_FILE'], 'w').write(hwm.split()[1])\n"
    "sys.exit(rc)\n"
)


def make_home(path: Path) -> Home:
    home = Home(path)
    init_deployment(home, user_pin=PIN, so_pin=SO_PIN, dev_root=True)
    with open_deployment(home, PIN) as dep:
        dep.hierarchy.create_kek_version("data")
    return home


def cli(*args: str) -> tuple[float, float, str, float]:
    """Run ``python -m custody_cli ARGS``: (wall s, peak RSS in MB, stdout, CPU s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODY_")}
    hwm = Path(tempfile.mkstemp(prefix="bench-hwm-")[1])
    env.update(CUSTODY_PIN=PIN, PYTHONPATH=str(ROOT), BENCH_HWM_FILE=str(hwm))
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            [sys.executable, "-c", _CLI, *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
        )
        _, status, usage = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err = p.stderr.read().decode() if p.stderr else ""
        if p.returncode:
            raise SystemExit(f"custody {' '.join(args[:2])} exited {p.returncode}: {err}")
        out.seek(0)
        text = out.read(4096).decode(errors="replace")
    peak_kb = int(hwm.read_text())
    hwm.unlink()
    return dt, peak_kb / 1024, text, usage.ru_utime + usage.ru_stime


def kek_key(home: Home) -> bytes:
    with open_deployment(home, PIN) as dep:
        return dep.hierarchy.kek_plaintext("data", 1)


Timed = tuple[int, float, float]  # (objects, wall seconds, CPU seconds)


def bare_verify(db: Path, key: bytes) -> Timed:
    """The baseline: the same rows, the same per-object checks, nothing else."""
    dom = b"custody/object-digest/v1"
    prefix = hashlib.sha256(len(dom).to_bytes(2, "big") + dom)
    hdr = envelope.header("data", 1)
    hl = len(hdr)
    aad = hdr + b"custody/obj/"
    dec = AESGCM(key).decrypt
    checked = bad = 0
    t0, c0 = time.perf_counter(), time.process_time()
    conn = sqlite3.connect(db, isolation_level=None)
    cur = conn.execute("SELECT uid, wrapped, digest FROM objects")
    while rows := cur.fetchmany(10_000):
        for uid, w, digest in rows:
            if w[:hl] != hdr:
                bad += 1
                continue
            plain = dec(w[hl : hl + 12], w[hl + 12 :], aad + uid)
            h = prefix.copy()
            h.update(len(uid).to_bytes(8, "big") + uid + len(plain).to_bytes(8, "big") + plain)
            if h.digest() != digest:
                bad += 1
        checked += len(rows)
    conn.close()
    dt, ct = time.perf_counter() - t0, time.process_time() - c0
    assert bad == 0
    return checked, dt, ct


def bare_decrypt_only(db: Path, key: bytes) -> Timed:
    hdr = envelope.header("data", 1)
    hl = len(hdr)
    aad = hdr + b"custody/obj/"
    conn = sqlite3.connect(db)
    rows = [
        (w[hl : hl + 12], w[hl + 12 :], aad + uid)
        for uid, w in conn.execute("SELECT uid, wrapped FROM objects")
    ]
    conn.close()
    dec = AESGCM(key).decrypt
    t0, c0 = time.perf_counter(), time.process_time()
    for n, body, a in rows:
        dec(n, body, a)
    return len(rows), time.perf_counter() - t0, time.process_time() - c0


def lib_verify(home: Home) -> Timed:
    with open_deployment(home, PIN) as dep:
        h = dep.hierarchy
        h.forget_keys()
        t0, c0 = time.perf_counter(), time.process_time()
        rep = h.verify_objects()
        dt, ct = time.perf_counter() - t0, time.process_time() - c0
    assert rep.ok
    return rep.checked, dt, ct


def cli_verify(home: Home, n: int) -> Timed:
    dt, _, out, ct = cli("dek", "verify", "--all", "--home", str(home.root))
    assert f"checked {n} objects: {n} ok" in out, out
    return n, dt, ct


def status_lib(home: Home) -> float:
    t0 = time.perf_counter()
    deployment_status(home, None)
    return time.perf_counter() - t0


def status_cli(home: Home) -> float:
    return cli("status", "--home", str(home.root))[0]


def fmt(xs: list[float], scale: float = 1.0, unit: str = "") -> str:
    m = statistics.median(xs) * scale
    return f"{m:,.3g}{unit} [{min(xs) * scale:,.3g}-{max(xs) * scale:,.3g}]"


def rate(xs: list[Timed], cpu: bool = False) -> list[float]:
    return [n / (ct if cpu else dt) for n, dt, ct in xs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="custody dek verify/generate and status vs baselines")
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated object counts")
    ap.add_argument("--runs", type=int, default=3, help="repetitions of each verify measurement")
    ap.add_argument("--status-runs", type=int, default=7)
    ap.add_argument("--no-json-generate", action="store_true")
    ap.add_argument("--workdir")
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-dek-"))
    table: list[tuple[str, str, str, str, str]] = []
    try:
        empty = make_home(work / "empty")
        homes: dict[int, Home] = {}
        for n in sizes:
            home = make_home(work / f"h{n}")
            dt, rss, _, _ = cli("dek", "generate", "--count", str(n), "--home", str(home.root))
            homes[n] = home
            print(f"dek generate {n:,}: {dt:.1f} s ({n / dt:,.0f}/s), peak RSS {rss:.0f} MB")
            table.append(
                (
                    f"dek generate {n:,} (text), peak RSS",
                    f"{rss:.0f} MB ({n / dt:,.0f}/s)",
                    "-",
                    "-",
                    "< 100 MB" + (": MET" if rss < 100 else ": NOT MET"),
                )
            )
        for n in sizes:
            home = homes[n]
            key = kek_key(home)
            runs: dict[str, list[Timed]] = {
                "cli": [],
                "lib": [],
                "bare": [],
                "dec": [],
            }
            steps: list[tuple[str, Callable[[], Timed]]] = [
                ("cli", partial(cli_verify, home, n)),
                ("lib", partial(lib_verify, home)),
                ("bare", partial(bare_verify, home.db_path, key)),
                ("dec", partial(bare_decrypt_only, home.db_path, key)),
            ]
            for r in range(a.runs):
                for name, fn in steps[r % 4 :] + steps[: r % 4]:
                    checked, dt, ct = fn()
                    assert checked == n, (name, checked)
                    runs[name].append((checked, dt, ct))
                    print(
                        f"verify {n:,} run {r} {name:<4} {dt:.3f} s ({checked / dt:,.0f}/s; "
                        f"CPU {ct:.3f} s)"
                    )
            bare = statistics.median(rate(runs["bare"]))
            dec = statistics.median(rate(runs["dec"]))
            bare_cpu = statistics.median(rate(runs["bare"], cpu=True))
            for name, label in (("cli", "CLI"), ("lib", "library")):
                c = statistics.median(rate(runs[name]))
                ratio = c / bare
                cpu_ratio = statistics.median(rate(runs[name], cpu=True)) / bare_cpu
                table.append(
                    (
                        f"dek verify --all {n:,} ({label}), objects/s",
                        fmt(rate(runs[name])),
                        f"bare loop {fmt(rate(runs['bare']))}",
                        f"{ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (vs decrypt-only {c / dec:.2f}x)",
                        ">= 0.80x" + (": MET" if ratio >= 0.8 else ": NOT MET"),
                    )
                )
            table.append(
                (
                    f"  reference: bare decrypt only {n:,}, objects/s",
                    fmt(rate(runs["dec"])),
                    "-",
                    f"bare loop = {bare / dec:.2f}x of it",
                    "-",
                )
            )
        big = homes[max(sizes)]
        st: dict[str, list[float]] = {"cli0": [], "cliN": [], "lib0": [], "libN": []}
        for r in range(a.status_runs):
            pairs = [("cli0", empty), ("cliN", big)]
            for name, h in pairs if r % 2 == 0 else pairs[::-1]:
                st[name].append(status_cli(h))
            pairs = [("lib0", empty), ("libN", big)]
            for name, h in pairs if r % 2 == 0 else pairs[::-1]:
                st[name].append(status_lib(h))
        for label, k0, kn in (("CLI", "cli0", "cliN"), ("library", "lib0", "libN")):
            ratio = statistics.median(st[kn]) / statistics.median(st[k0])
            table.append(
                (
                    f"custody status, {max(sizes):,} objects ({label})",
                    fmt(st[kn], 1000, " ms"),
                    f"empty home {fmt(st[k0], 1000, ' ms')}",
                    f"{ratio:.2f}x",
                    "<= 1.2x" + (": MET" if ratio <= 1.2 else ": NOT MET"),
                )
            )
        if not a.no_json_generate:
            n = max(sizes)
            jh = make_home(work / "json")
            dt, rss, _, _ = cli(
                "dek", "generate", "--count", str(n), "--json", "--home", str(jh.root)
            )
            print(f"dek generate --json {n:,}: {dt:.1f} s, peak RSS {rss:.0f} MB")
            table.append(
                (
                    f"dek generate {n:,} --json, peak RSS",
                    f"{rss:.0f} MB ({n / dt:,.0f}/s)",
                    "-",
                    "-",
                    "< 100 MB" + (": MET" if rss < 100 else ": NOT MET"),
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    heads = ("workload", "custody: median [min-max]", "baseline: median [min-max]", "ratio", "goal")
    widths = [max(len(row[i]) for row in [heads, *table]) for i in range(5)]
    print()
    for row in [heads, *table]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(
        f"\n(verify: {a.runs} runs each; status: {a.status_runs} runs each; interleaved; "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: backup ``rekey --full`` vs ``cp`` + ``sync``, and header-only rewrap of many backups.

    python bench/bench_backup.py [--mib 2048] [--reps 3] [--rewraps 10000]

Both sides of the full comparison read the same backup file and write a new file of the
same size on the same disk, then make it durable (``sync FILE`` = fsync for cp; fdatasync
checkpoints and a final fsync for custody). custody also authenticates every source chunk
and every new chunk, and checks the new file's header, size and end before its atomic
rename (docs/backups.md). The page cache is dropped before each measurement when
/proc/sys/vm/drop_caches is writable. The two sides alternate within each rep; the ratio of
each rep's pair is reported too, since a shared disk drifts between reps. Header rewrap is
timed for a batch of N backups with the backup KEKs already unwrapped (the one HSM round
trip per KEK is excluded); ``--rewraps 0`` skips it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from custody.backup import archive as backup
from custody.backup import rekey as backup_rekey
from custody.config import Home
from custody.deployment import init_deployment, open_deployment

PIN, SO_PIN = "bench-pin-1234", "bench-so-5678"


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="backup rekey benchmarks")
    ap.add_argument("--mib", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rewraps", type=int, default=10_000)
    ap.add_argument("--workdir")
    a = ap.parse_args(argv)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-backup-"))
    free = shutil.disk_usage(work).free >> 20
    if free < 4 * a.mib + 512:
        a.mib = max(64, (free - 512) // 4)
        print(f"only {free} MiB free: using a {a.mib} MiB file")
    home = Home(work / "home")
    init_deployment(home, user_pin=PIN, so_pin=SO_PIN, dev_root=True)
    with open_deployment(home, PIN) as dep:
        h = dep.hierarchy
        h.create_kek_version("backup")
        src = work / "src.bin"
        block = os.urandom(64 << 20)
        with open(src, "wb") as fh:
            fh.writelines(block[: min(64, a.mib - i) << 20] for i in range(0, a.mib, 64))
        bk = work / "b.cbk"
        backup.create(h, src, bk)
        src.unlink()
        cp_t, rk_t = [], []
        for r in range(a.reps):
            for which in ("cp", "rekey") if r % 2 == 0 else ("rekey", "cp"):
                cold = drop_caches()
                if which == "cp":
                    dst = work / "copy.cbk"
                    t0 = time.perf_counter()
                    subprocess.run(["cp", str(bk), str(dst)], check=True)
                    subprocess.run(["sync", str(dst)], check=True)
                    cp_t.append(time.perf_counter() - t0)
                    dst.unlink()
                else:
                    t0 = time.perf_counter()
                    backup_rekey.rekey_full(h, bk)
                    rk_t.append(time.perf_counter() - t0)
                print(
                    f"rep {r}: {which:<5} {(cp_t if which == 'cp' else rk_t)[-1]:.2f} s"
                    f"{' (cold cache)' if cold else ''}"
                )
        cm, rm = statistics.median(cp_t), statistics.median(rk_t)
        pairs = statistics.median(c / r for c, r in zip(cp_t, rk_t, strict=True))

        def mib_s(t: float) -> float:
            rate: float = a.mib / t
            return rate

        print(
            f"full re-encrypt of {a.mib} MiB: median {rm:.2f} s ({mib_s(rm):,.0f} MiB/s); "
            f"cp+sync {cm:.2f} s ({mib_s(cm):,.0f} MiB/s); ratio {cm / rm:.2f} "
            f"of cp+sync throughput (median of per-rep ratios {pairs:.2f}; target >= 0.80)"
        )
        bk.unlink()
        if a.rewraps <= 0:
            shutil.rmtree(work, ignore_errors=True)
            return 0

        # header-only rewrap of many backups
        d = work / "many"
        d.mkdir()
        one = work / "one.bin"
        one.write_bytes(os.urandom(4096))
        paths = []
        t0 = time.perf_counter()
        for i in range(a.rewraps):
            p = d / f"b{i}.cbk"
            backup.create(h, one, p, chunk_size=4096)
            paths.append(p)
        print(f"created {a.rewraps} small backups in {time.perf_counter() - t0:.1f} s")
        h.create_kek_version("backup")
        for v in (1, 2):  # the HSM unwrap of each KEK, excluded from the timing
            h.kek_plaintext("backup", v)
        t0 = time.perf_counter()
        infos = backup.rewrap(h, paths)
        dt = time.perf_counter() - t0
        assert all(i.kek_version == 2 for i in infos)
        print(
            f"header rewrap, one batch of {a.rewraps}: {dt:.2f} s = "
            f"{dt / a.rewraps * 1e3:.3f} ms per backup (target < 1 ms)"
        )
        h.create_kek_version("backup")
        h.kek_plaintext("backup", 3)
        k = min(1000, a.rewraps)
        t0 = time.perf_counter()
        for p in paths[:k]:
            backup.rewrap(h, [p])
        dt = time.perf_counter() - t0
        print(f"header rewrap, {k} single-file calls: {dt / k * 1e3:.3f} ms per backup")
        backup.verify(h, paths[0])
        backup.verify(h, paths[-1])
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

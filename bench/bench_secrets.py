"""Benchmark: ``secret get`` with auditing on vs a bare AES-256-GCM decrypt with no audit, in
the same run, for 1 and 4 processes, on a temporary home with a SoftHSMv2 token.

Run ``.venv/bin/python bench/bench_secrets.py [--secrets N] [--seconds S] [--rounds R]
[--json]``. custody's side is what the CLI does per read, in process (no interpreter start):
an audit ``intent`` entry committed before the read, the secret's metadata and version rows
read from SQLite, the DEK unwrapped under its KEK version, the value decrypted and its keyed
digest checked, and an ``ok`` entry. The baseline decrypts the same ciphertexts with their
DEKs already in memory and writes nothing. Each process reads for S seconds per round; the
table shows the median total reads/s over R rounds, the spread (min-max), and the ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PIN, SO_PIN = "bench-user-pin-5150", "bench-so-pin-5150"


def _cli(home: Path, pins: Path, *args: str, stdin: str | None = None) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    p = subprocess.run(
        [sys.executable, "-m", "custody_cli", *args, "--home", str(home), "--pin-file", str(pins)],
        input=stdin, text=True, capture_output=True, env=env, check=False,
    )  # fmt: skip
    if p.returncode:
        raise SystemExit(f"custody {' '.join(args)}: {p.stderr}")


def setup(root: Path, n: int) -> tuple[Path, Path]:
    pins = root / "pins"
    pins.write_text(f"pin={PIN}\nso_pin={SO_PIN}\n")
    pins.chmod(0o600)
    home = root / "home"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    subprocess.run(
        [sys.executable, "-m", "custody_cli", "init", "--home", str(home), "--pin-file",
         str(pins), "--dev-root"], check=True, capture_output=True, env=env,
    )  # fmt: skip
    _cli(home, pins, "kek", "rotate", "--branch", "secrets")
    from custody.deployment import open_deployment
    from custody.secrets import Category, Vault

    with open_deployment(home, lambda: PIN) as dep:
        v = Vault(dep.store, dep.hierarchy)
        for i in range(n):
            v.generate("prod", f"bench/s{i}", category=Category.JWT_SECRET, owner="bench")
    return home, pins


def _custody_worker(home: str, n: int, seconds: float, q: Any) -> None:
    from custody.audit.scope import run_audited
    from custody.config import Home
    from custody.deployment import open_deployment
    from custody.secrets import Vault

    with open_deployment(Path(home), lambda: PIN) as dep:
        v = Vault(dep.store, dep.hierarchy)
        h = Home(Path(home))
        count, i, end = 0, 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            path = f"bench/s{i % n}"

            def read(p: str = path) -> int:
                v.get("prod", p)
                return 0

            run_audited(h, "secret get", f"prod:{path}", {"env": "prod", "path": path}, read)
            count += 1
            i += 1
    q.put(count / seconds)


def _bare_worker(home: str, n: int, seconds: float, q: Any) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from custody.deployment import open_deployment
    from custody.secrets.vault import _aad

    with open_deployment(Path(home), lambda: PIN) as dep:
        rows = []
        for i in range(n):
            ver = dep.store.secret_version("prod", f"bench/s{i}", 1)
            assert ver is not None and ver.dek_uid and ver.ciphertext
            dek = AESGCM(dep.hierarchy.unwrap_object(ver.dek_uid))
            rows.append((dek, ver.ciphertext, _aad("prod", f"bench/s{i}", 1, ver.dek_uid)))
    count, i, end = 0, 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        dek, ct, aad = rows[i % n]
        dek.decrypt(ct[:12], ct[12:], aad)
        count += 1
        i += 1
    q.put(count / seconds)


def _measure(worker: Callable[..., None], home: Path, n: int, procs: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    ps = [ctx.Process(target=worker, args=(str(home), n, seconds, q)) for _ in range(procs)]
    for p in ps:
        p.start()
    rates = [float(q.get(timeout=600)) for _ in ps]
    for p in ps:
        p.join()
    return sum(rates)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--secrets", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="custody-bench-") as tmp:
        os.environ["SOFTHSM2_CONF"] = str(Path(tmp) / "home" / "softhsm2.conf")
        home, _ = setup(Path(tmp), a.secrets)
        for procs in (1, 4):
            c = [
                _measure(_custody_worker, home, a.secrets, procs, a.seconds)
                for _ in range(a.rounds)
            ]
            b = [_measure(_bare_worker, home, a.secrets, procs, a.seconds) for _ in range(a.rounds)]
            out[procs] = {
                "custody_reads_s": statistics.median(c),
                "custody_spread": [min(c), max(c)],
                "bare_reads_s": statistics.median(b),
                "bare_spread": [min(b), max(b)],
                "ratio": statistics.median(c) / statistics.median(b),
            }
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'procs':>5} {'custody get+audit/s':>20} {'(spread)':>18} {'bare decrypt/s':>15} "
          f"{'(spread)':>20} {'ratio':>7}")  # fmt: skip
    for procs, f in out.items():
        cs, bs = f["custody_spread"], f["bare_spread"]
        line = f"{procs:>5} {f['custody_reads_s']:>20,.0f} {cs[0]:>8,.0f}-{cs[1]:<9,.0f} "
        line += f"{f['bare_reads_s']:>15,.0f} {bs[0]:>9,.0f}-{bs[1]:<10,.0f} {f['ratio']:>7.4f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Crash-safety harness: SIGKILL ``custody rekey run`` and ``custody backup rekey --full``.

Run small from pytest (tests/custody/rekey/test_rekey_crash.py) or at full size as a script::

    python tests/crash_harness.py --objects 200000 --kills 50 --backup-mib 512 --backup-kills 50

Each round starts the real CLI as a subprocess, kills it with SIGKILL after a random delay
(drawn from the duration of uninterrupted runs, so kills land in startup, the batch loop,
verification and retirement alike), reaps it, checks the invariants, and resumes. A new
KEK version is rotated in whenever nothing is left to move, so kills also hit jobs that
span several old versions. At the end every object must decrypt and match its digest, no
version that still wraps an object may be disabled, and the backup must restore byte for
byte.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Imported after the path set-up above: the harness also runs as a script.
from custody.backup.sidecar import read_state  # noqa: E402
from tests.conftest import cli_env  # noqa: E402
from tests.rekey_fixtures import (  # noqa: E402
    cli,
    cli_json,
    db,
    make_deployment,
    retired_but_used,
)


@dataclass
class Result:
    kills: int = 0
    completed_runs: int = 0
    rotations: int = 0
    resumed: int = 0
    checked: int = 0


def _kill_after(args: list[str], delay: float) -> tuple[bool, float]:
    """Start the CLI, SIGKILL it after *delay* s. Returns (killed, elapsed)."""
    t0 = time.monotonic()
    p = subprocess.Popen(
        [sys.executable, "-m", "custody_cli", *args],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return True, time.monotonic() - t0
    if p.returncode != 0:
        err = p.stderr.read().decode() if p.stderr else ""
        raise AssertionError(f"custody {' '.join(args[:3])} failed: {err}")
    return False, time.monotonic() - t0


def rekey_crash(work: Path, *, objects: int, kills: int, seed: int, batch: int = 2000) -> Result:
    """SIGKILL ``rekey run`` *kills* times over a store of *objects*; then check everything."""
    rng = random.Random(seed)
    home, pins = make_deployment(work, data_objects=objects)
    res = Result()
    typical = 0.5
    base = [
        "rekey",
        "run",
        "--batch",
        str(batch),
        "--verify",
        "sample",
        "--sample",
        "200",
        "--home",
        str(home),
        "--pin-file",
        str(pins),
    ]
    while res.kills < kills:
        with db(home) as c:
            left = c.execute(
                "SELECT COUNT(*) FROM objects o JOIN kek_versions k ON "
                "k.branch=o.branch AND k.version=o.kek_version "
                "WHERE k.state!='active'"
            ).fetchone()[0]
        if left == 0:
            cli(home, pins, "kek", "rotate", "--branch", "data")
            res.rotations += 1
        killed, elapsed = _kill_after(base, rng.uniform(0.0, typical * 1.1))
        if killed:
            res.kills += 1
            if left and left < objects:
                res.resumed += 1
        else:
            res.completed_runs += 1
            typical = 0.7 * typical + 0.3 * elapsed
        bad = retired_but_used(home)
        assert bad == [], f"a retired version still wraps objects: {bad}"
        with db(home) as c:
            assert c.execute("SELECT COUNT(*) FROM objects").fetchone()[0] == objects
    cli(home, pins, "rekey", "run")
    ver = cli_json(home, pins, "rekey", "verify", "--all")
    assert ver["ok"] and ver["checked"] == objects, ver["failed"][:5]
    assert retired_but_used(home) == []
    res.checked = ver["checked"]
    return res


def backup_crash(
    work: Path, *, mib: int, kills: int, seed: int, chunk: int = 1 << 20, checkpoint_mib: int = 1
) -> Result:
    """SIGKILL ``backup rekey --full`` *kills* times; the file must always be a whole backup."""
    rng = random.Random(seed)
    home, pins = make_deployment(work, backup_kek=True)
    src = work / "src.bin"
    with open(src, "wb") as fh:
        fh.writelines(rng.randbytes(1 << 20) for _ in range(mib))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    bk = work / "b.cbk"
    cli(home, pins, "backup", "create", str(src), "--out", str(bk), "--chunk-size", str(chunk))
    res = Result()
    typical = 0.5 + mib / 400
    args = [
        "backup",
        "rekey",
        "--full",
        str(bk),
        "--checkpoint-mib",
        str(checkpoint_mib),
        "--home",
        str(home),
        "--pin-file",
        str(pins),
        "--json",
    ]
    while res.kills < kills:
        killed, elapsed = _kill_after(args, rng.uniform(0.0, typical * 1.1))
        if killed:
            res.kills += 1
            state = bk.with_name(bk.name + ".rekey-state")
            doc = read_state(state)
            if doc and doc.get("chunks_done"):
                res.resumed += 1
        else:
            res.completed_runs += 1
            typical = 0.7 * typical + 0.3 * elapsed
        if mib <= 64 or res.kills % 10 == 0:  # the file under the real name is always whole
            cli(home, pins, "backup", "verify", str(bk))
    cli(home, pins, "backup", "rekey", "--full", str(bk))
    out = work / "restored.bin"
    cli(home, pins, "backup", "restore", str(bk), "--out", str(out))
    h = hashlib.sha256()
    with open(out, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    assert h.hexdigest() == digest, "restored bytes differ"
    res.checked = mib
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=200_000)
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--backup-mib", type=int, default=512)
    ap.add_argument("--backup-kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args(argv)
    base = Path(a.workdir or tempfile.mkdtemp(prefix="custody-crash-"))
    if a.objects and a.kills:
        t0 = time.monotonic()
        r = rekey_crash(
            base / "rekey", objects=a.objects, kills=a.kills, seed=a.seed, batch=a.batch
        )
        print(
            f"rekey: {r.kills} SIGKILLs ({r.resumed} mid-job), {r.completed_runs} completed "
            f"runs, {r.rotations} rotations; {r.checked}/{a.objects} objects verified; "
            f"{time.monotonic() - t0:.0f} s"
        )
    if a.backup_mib and a.backup_kills:
        t0 = time.monotonic()
        r = backup_crash(
            base / "backup",
            mib=a.backup_mib,
            kills=a.backup_kills,
            seed=a.seed,
            checkpoint_mib=max(1, a.backup_mib // 64),
        )
        print(
            f"backup: {r.kills} SIGKILLs ({r.resumed} with a checkpoint), {r.completed_runs} "
            f"completed runs; {a.backup_mib} MiB restored byte for byte; "
            f"{time.monotonic() - t0:.0f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``make bench``: run every benchmark once, each in its own process, at full size unless
``BENCH_QUICK=1`` (then small sizes, for a smoke run). Figures are medians, side by side with
the baseline each one measures in the same run; see each script's --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL: dict[str, list[str]] = {
    "bench_hsm.py": [],
    "bench_shamir.py": [],
    "bench_transcript.py": [],
    "bench_rekey.py": [],
    "bench_backup.py": [],
    "bench_tui.py": [],
    "bench_secrets.py": [],
    "bench_dek.py": [],
    "bench_audit.py": [],
    "bench_anomaly.py": [],
}
QUICK: dict[str, list[str]] = {
    "bench_hsm.py": ["--rounds", "3", "--ops", "100"],
    "bench_shamir.py": ["--rounds", "5"],
    "bench_transcript.py": ["--events", "5000", "--runs", "1", "--appends", "100"],
    "bench_rekey.py": ["--objects", "50000", "--reps", "1"],
    "bench_backup.py": ["--mib", "64", "--reps", "1", "--rewraps", "500"],
    "bench_tui.py": ["--runs", "3"],
    "bench_secrets.py": ["--secrets", "20", "--seconds", "1", "--rounds", "1"],
    "bench_dek.py": ["--sizes", "2000,20000", "--runs", "1", "--status-runs", "3"],
    "bench_audit.py": ["--seconds", "0.5", "--rounds", "1", "--verify", "5000"],
    "bench_anomaly.py": ["--weeks", "6", "--services", "20", "--people", "30", "--per-kind", "5"],
}


def main() -> int:
    plan = QUICK if os.environ.get("BENCH_QUICK") else FULL
    only = sys.argv[1:]
    failed = []
    for script, args in plan.items():
        if only and script.removeprefix("bench_").removesuffix(".py") not in only:
            continue
        print(f"\n=== {script} {' '.join(args)}", flush=True)
        env = dict(os.environ, PYTHONPATH=str(HERE.parent))
        rc = subprocess.run(
            [sys.executable, str(HERE / script), *args], env=env, check=False
        ).returncode
        if rc:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Split and combine a 32-byte secret: custody.shares.slip39 vs the reference shamir_mnemonic.

Two layouts: 3-of-5 (one group) and 2-of-3 groups (each group 2-of-3). Both sides use the
same SLIP-0039 parameters (iteration exponent 1, extendable, empty passphrase), in the same
process and run, interleaved. Prints medians and the custody/reference ratio.

    .venv/bin/python bench/bench_shamir.py [--json] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import shamir_mnemonic

from custody.shares import slip39

LAYOUTS = {"3-of-5": (1, [(3, 5)]), "2-of-3 groups": (2, [(2, 3), (2, 3), (2, 3)])}


def _pick(groups: list[list[str]], gt: int, t: int) -> list[str]:
    return [m for g in groups[:gt] for m in g[:t]]


def _median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run(rounds: int) -> dict[str, dict[str, float]]:
    secret = os.urandom(32)
    return {name: _layout(secret, gt, groups, rounds) for name, (gt, groups) in LAYOUTS.items()}


def _layout(secret: bytes, gt: int, groups: list[tuple[int, int]], rounds: int) -> dict[str, float]:
    t = groups[0][0]
    ours = [list(g) for g in slip39.split(secret, groups=groups, group_threshold=gt)]
    ref = shamir_mnemonic.generate_mnemonics(gt, groups, secret)
    assert slip39.combine(_pick(ref, gt, t)) == secret
    assert shamir_mnemonic.combine_mnemonics(_pick(ours, gt, t)) == secret
    r = {
        "custody_split_ms": _median_ms(
            lambda: slip39.split(secret, groups=groups, group_threshold=gt), rounds
        ),
        "reference_split_ms": _median_ms(
            lambda: shamir_mnemonic.generate_mnemonics(gt, groups, secret), rounds
        ),
        "custody_combine_ms": _median_ms(lambda: slip39.combine(_pick(ours, gt, t)), rounds),
        "reference_combine_ms": _median_ms(
            lambda: shamir_mnemonic.combine_mnemonics(_pick(ref, gt, t)), rounds
        ),
    }
    r["split_ratio"] = r["custody_split_ms"] / r["reference_split_ms"]
    r["combine_ratio"] = r["custody_combine_ms"] / r["reference_combine_ms"]
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    res = run(args.rounds)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{'layout':<15}{'op':<9}{'custody ms':>12}{'reference ms':>14}{'ratio':>8}")
    for name, r in res.items():
        for op in ("split", "combine"):
            print(
                f"{name:<15}{op:<9}{r[f'custody_{op}_ms']:>12.2f}"
                f"{r[f'reference_{op}_ms']:>14.2f}{r[f'{op}_ratio']:>8.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

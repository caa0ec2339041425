"""Benchmark: transcript verification and durable audit appends vs raw crypto rates.

Run: ``.venv/bin/python bench/bench_transcript.py [--events 100000] [--runs 3]``.

Measures, in one process and one run:
  * raw SHA-256 (300-byte messages), Ed25519 sign and verify, and raw write+fsync rates;
  * ``verify_bundle`` on an in-memory bundle of N events (every event signed, a
    quorum-gated action with 3 approvals every 100 events, a checkpoint every 64 events);
  * audit-log appends per second with durable commits (WAL, synchronous=FULL);
  * with ``--memory N1,N2,...``: ``custody transcript verify`` as a subprocess on a bundle
    of each size, both as a directory and as its ``.tar`` archive, its time and peak RSS
    (VmHWM), to show that memory stays flat as the transcript grows (both forms are
    streamed from the disk).
Prints medians and ratios (and ``--json`` for machines).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Imported after the path set-up above, so the script runs from a checkout.
from ceremonies.transcript import (  # noqa: E402
    Approval,
    BundleData,
    Ed25519Signer,
    Policy,
    Recorder,
    RosterEntry,
    SignedPolicy,
    Threshold,
    TrustKey,
    verify_bundle,
)
from custody.audit.log import AuditLog  # noqa: E402

MSG = os.urandom(300)


def rate(fn: Any, n: int, runs: int) -> float:
    """Median operations/second of *runs* runs of *n* calls."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        out.append(n / (time.perf_counter() - t))
    return statistics.median(out)


class MemRecorder(Recorder):
    """The real recorder's signing and chaining, writing to memory (no fsync) for speed."""

    def _write(self, name: str, data: bytes, what: str, arts: Any = {}) -> None:  # noqa: B006
        self.mem.setdefault(name, bytearray()).extend(data)  # type: ignore[attr-defined]

    def _precheck(self, ev: Any, what: str) -> None:
        pass


def build_bundle(n: int) -> tuple[BundleData, list[TrustKey]]:
    sk = {
        name: Ed25519Signer.from_seed(name, hashlib.sha256(name.encode()).digest())
        for name in ("alice", "bob", "carol", "dave")
    }
    t0 = 1_800_000_000
    roster = tuple(
        RosterEntry(
            name=k,
            role="super-admin" if k == "dave" else "custodian",
            public=s.public,
            valid_from=t0 - 10,
            valid_until=t0 + 10**7,
        )
        for k, s in sk.items()
    )
    pol = Policy.new(
        purpose="bench",
        kind="drill",
        created_at=t0,
        roster=roster,
        permissions={"super-admin": ("*",), "custodian": ("*",)},
        thresholds={"rotate-kek": Threshold(role="custodian", count=3)},
        close_quorum={"super-admin": 1},
        checkpoint_interval=64,
    )
    sp = SignedPolicy(policy=pol).signed_by(sk["dave"])
    clock = iter(range(t0, t0 + 10 * n + 100))
    rec = MemRecorder.__new__(MemRecorder)
    Recorder.__init__(rec, [Path("/nonexistent")], sp, sk["dave"], lambda: next(clock))
    rec.mem = {}  # type: ignore[attr-defined]
    from ceremonies.transcript.rules import open_body

    rec.record("open", "ceremony.open", sk["dave"], open_body(pol))
    names = ("alice", "bob", "carol")
    for i in range(1, n - 1):
        if i % 100 == 0:
            p = {"i": i}
            d = rec.action_digest("rotate-kek", f"a{i}", p)
            now = rec.events[-1].time + 1
            apps = [
                Approval.create(
                    sk[x],
                    ceremony_id=pol.ceremony_id,
                    action="rotate-kek",
                    action_id=f"a{i}",
                    digest=d,
                    now=now - 1,
                )
                for x in names
            ]
            rec.record_action(
                "step", "rotate-kek", sk["dave"], action_id=f"a{i}", params=p, approvals=apps
            )
        else:
            who = sk[names[i % 3]]
            rec.record(
                "step",
                "share.commitment",
                who,
                {"custodian": who.name, "commitment": hashlib.sha256(b"%d" % i).hexdigest()},
            )
    rec.close(sk["dave"], [sk["dave"]])
    mem = rec.mem  # type: ignore[attr-defined]
    data = BundleData(
        policy=sp.to_bytes(),
        events=bytes(mem["events.jsonl"]),
        checkpoints=bytes(mem["checkpoints.jsonl"]),
    )
    return data, [TrustKey.of(sk["dave"])]


def fsync_rate(d: Path, n: int) -> float:
    f = d / "fsync.bin"
    with open(f, "ab") as fh:
        t = time.perf_counter()
        for _ in range(n):
            fh.write(MSG)
            fh.flush()
            os.fsync(fh.fileno())
        return n / (time.perf_counter() - t)


def verify_cli_rss(bundle: Path, pins: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS MiB, exit code) of ``custody transcript verify`` as a subprocess
    (of the code in ``$BENCH_CODE``, a checkout to compare with, when set)."""
    code_root = os.environ.get("BENCH_CODE", str(ROOT))
    code = (
        "import runpy, sys; sys.argv = ['custody', 'transcript', 'verify', "
        f"{str(bundle)!r}, '--trust', {str(pins)!r}]\n"
        "try:\n    runpy.run_module('custody_cli', run_name='__main__')\n"
        "except SystemExit as e:\n    rc = e.code\n"
        "else:\n    rc = 0\n"
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]\n"
        "sys.stderr.write(f'RSS {hwm[0].split()[1]}\\n')\n"
        "sys.exit(rc)\n"
    )
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=code_root,
        env=dict(os.environ, PYTHONPATH=code_root),
        check=False,
    )
    dt = time.perf_counter() - t
    rss = [ln for ln in r.stderr.splitlines() if ln.startswith("RSS ")]
    return dt, int(rss[-1].split()[1]) / 1024 if rss else float("nan"), r.returncode


def memory(sizes: list[int]) -> list[dict[str, Any]]:
    from ceremonies.transcript.bundle import to_archive, write_dir

    out = []
    with tempfile.TemporaryDirectory(dir=ROOT) as d:
        pins = Path(d) / "pins.json"
        pins.write_text(
            json.dumps(
                {
                    "type": "custody.transcript.pins/v1",
                    "pins": [
                        {
                            "alg": "ed25519",
                            "name": n,
                            "public": Ed25519Signer.from_seed(
                                n, hashlib.sha256(n.encode()).digest()
                            ).public.hex(),
                            "role": "super-admin" if n == "dave" else "custodian",
                        }
                        for n in ("alice", "bob", "carol", "dave")
                    ],
                }
            )
        )
        for n in sizes:
            data, _ = build_bundle(n)
            b = Path(d) / f"b{n}"
            write_dir(data, b)
            (Path(d) / f"b{n}.tar").write_bytes(to_archive(data))
            mb = (len(data.events) + len(data.checkpoints)) / 1e6
            del data
            for form, path in (("dir", b), ("tar", Path(d) / f"b{n}.tar")):
                dt, rss, rc = verify_cli_rss(path, pins)
                if rc != 0:
                    raise SystemExit(f"transcript verify of {n} events ({form}) failed (exit {rc})")
                out.append(
                    {
                        "events": n,
                        "form": form,
                        "bundle_mb": mb,
                        "verify_s": dt,
                        "peak_rss_mib": rss,
                    }
                )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--appends", type=int, default=500)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--memory", default="", help="bundle sizes for the RSS run, e.g. 20000,100000")
    a = ap.parse_args(argv)
    if a.memory:
        rows = memory([int(x) for x in a.memory.split(",") if x])
        for row in rows:
            print(
                f"transcript verify {int(row['events']):>9,} events, {row['form']} "
                f"({row['bundle_mb']:.0f} MB): "
                f"{row['verify_s']:.1f} s, peak RSS {row['peak_rss_mib']:.0f} MiB"
            )
        return 0
    key = Ed25519Signer.from_seed("k", b"\x01" * 32)
    sig = key.sign(MSG)
    pub = key.key.public_key()
    res: dict[str, Any] = {"events": a.events, "runs": a.runs}
    res["sha256_per_s"] = rate(lambda: hashlib.sha256(MSG).digest(), 200_000, a.runs)
    res["ed25519_sign_per_s"] = rate(lambda: key.sign(MSG), 20_000, a.runs)
    res["ed25519_verify_per_s"] = rate(lambda: pub.verify(sig, MSG), 20_000, a.runs)

    t = time.perf_counter()
    data, trust = build_bundle(a.events)
    res["build_s"] = time.perf_counter() - t
    res["bundle_mb"] = (len(data.events) + len(data.checkpoints)) / 1e6
    times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        rep = verify_bundle(data, trust)
        times.append(time.perf_counter() - t)
        assert rep.ok, rep.text()
    res["verify_s_median"] = statistics.median(times)
    res["verify_events_per_s"] = a.events / res["verify_s_median"]
    sigs = data.events.count(b'"signer"') + data.events.count(b'"approver"')
    res["signatures_verified"] = sigs
    res["verify_vs_ed25519_verify"] = res["verify_events_per_s"] / res["ed25519_verify_per_s"]
    res["ed25519_share_of_verify_time"] = (sigs / res["ed25519_verify_per_s"]) / res[
        "verify_s_median"
    ]

    with tempfile.TemporaryDirectory(dir=ROOT) as d:
        res["raw_fsync_per_s"] = statistics.median(fsync_rate(Path(d), 200) for _ in range(a.runs))
        rates = []
        for r in range(a.runs):
            log = AuditLog(Path(d) / f"audit{r}.db", audit_key=b"k" * 32, durable=True)
            t = time.perf_counter()
            for i in range(a.appends):
                log.append(
                    "secret.get", "svc/db", "alice", details={"i": i}, sensitive={"name": "x"}
                )
            rates.append(a.appends / (time.perf_counter() - t))
            log.close()
        res["audit_appends_per_s_durable"] = statistics.median(rates)
    res["audit_vs_raw_fsync"] = res["audit_appends_per_s_durable"] / res["raw_fsync_per_s"]
    res["audit_vs_ed25519_sign"] = res["audit_appends_per_s_durable"] / res["ed25519_sign_per_s"]
    res["audit_vs_sha256"] = res["audit_appends_per_s_durable"] / res["sha256_per_s"]
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        for k, v in res.items():
            print(f"{k:32} {v:,.4g}" if isinstance(v, float) else f"{k:32} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

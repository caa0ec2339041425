"""Benchmark: RFC 5649 wrap/unwrap and AES-256-GCM through the custody adapter vs bare
python-pkcs11 calls, in the same run, on a temporary SoftHSMv2 token it provisions itself.

Run ``.venv/bin/python bench/bench_hsm.py [--rounds N] [--ops N] [--json]``. Each
operation is timed in *rounds* batches of *ops* calls; the table shows the median ops/s and
the ratio adapter/bare (1.0 = no overhead). The adapter's extra work per call is the lock,
the key lookup by label (C_FindObjects), error translation, and for wrap/unwrap the
temporary session key holding the raw bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PIN = "bench-user-pin-5150"
SO_PIN = "bench-so-pin-5150"
LABEL = "bench"


def _rate(fn: Callable[[], object], ops: int, rounds: int) -> float:
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(ops):
            fn()
        rates.append(ops / (time.perf_counter() - t0))
    return statistics.median(rates)


def run(rounds: int = 5, ops: int = 300) -> dict[str, dict[str, float]]:
    """Provision a temp token, time each operation both ways; return {op: figures}."""
    from pkcs11 import Attribute, GCMParams, KeyType, Mechanism, ObjectClass

    from custody.config import HsmConfig
    from custody.hsm import softhsm
    from custody.hsm.pkcs11.adapter import open_hsm

    with tempfile.TemporaryDirectory(prefix="custody-bench-") as tmp:
        root = Path(tmp)
        conf = softhsm.write_conf(root)
        softhsm.init_token(conf, LABEL, SO_PIN, PIN)
        hsm = open_hsm(HsmConfig(token_label=LABEL, softhsm_conf=str(conf)), root, PIN)
        try:
            hsm.generate_aes_key("kek", 1, extractable=False)  # AES-GCM only
            hsm.generate_aes_key("kekw", 1, extractable=False, use="wrap")  # RFC 5649 only
            # Bare python-pkcs11 on the same module and token, sharing the adapter's login
            # (PKCS#11 login is per application and token).
            lib = hsm._module.lib
            session = lib.get_token(token_label=LABEL).open(rw=True)
            kek = session.get_key(object_class=ObjectClass.SECRET_KEY, label="kek/v1")
            kekw = session.get_key(object_class=ObjectClass.SECRET_KEY, label="kekw/v1")
            dek = os.urandom(32)
            tmpl = {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                Attribute.VALUE: dek,
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: False,
                Attribute.EXTRACTABLE: True,
            }
            plain, aad = os.urandom(64), b"bench"

            def bare_wrap() -> bytes:
                k = session.create_object(tmpl)
                try:
                    wrapped: bytes = kekw.wrap_key(k, mechanism=Mechanism.AES_KEY_WRAP_PAD)
                    return wrapped
                finally:
                    k.destroy()

            blob = bare_wrap()

            def bare_unwrap() -> bytes:
                k = kekw.unwrap_key(
                    ObjectClass.SECRET_KEY,
                    KeyType.GENERIC_SECRET,
                    blob,
                    mechanism=Mechanism.AES_KEY_WRAP_PAD,
                    store=False,
                    template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
                )
                try:
                    value: bytes = k[Attribute.VALUE]
                    return value
                finally:
                    k.destroy()

            def bare_encrypt() -> bytes:
                nonce = session.generate_random(96)
                sealed: bytes = kek.encrypt(
                    plain, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
                )
                return sealed

            nonce, ct = hsm.encrypt("kek", 1, plain, aad)

            def bare_decrypt() -> bytes:
                opened: bytes = kek.decrypt(
                    ct, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
                )
                return opened

            assert bare_unwrap() == dek and hsm.unwrap_bytes("kekw", 1, blob) == dek
            assert bare_decrypt() == plain
            cases = {
                "wrap (KWP)": (lambda: hsm.wrap_bytes("kekw", 1, dek), bare_wrap),
                "unwrap (KWP)": (lambda: hsm.unwrap_bytes("kekw", 1, blob), bare_unwrap),
                "encrypt (GCM 64 B)": (lambda: hsm.encrypt("kek", 1, plain, aad), bare_encrypt),
                "decrypt (GCM 64 B)": (lambda: hsm.decrypt("kek", 1, nonce, ct, aad), bare_decrypt),
            }
            out: dict[str, dict[str, float]] = {}
            for name, (adapter_fn, bare_fn) in cases.items():
                bare = _rate(bare_fn, ops, rounds)
                adapter = _rate(adapter_fn, ops, rounds)
                out[name] = {
                    "adapter_ops_s": round(adapter, 1),
                    "bare_ops_s": round(bare, 1),
                    "ratio": round(adapter / bare, 3),
                }
            session.close()
            return out
        finally:
            hsm.close()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point. Returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="timed batches per operation")
    p.add_argument("--ops", type=int, default=300, help="calls per batch")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    results = run(rounds=args.rounds, ops=args.ops)
    if args.json:
        print(json.dumps({"rounds": args.rounds, "ops": args.ops, "results": results}, indent=2))
        return 0
    print(f"{'operation':22} {'adapter ops/s':>14} {'bare ops/s':>12} {'adapter/bare':>13}")
    for name, r in results.items():
        print(
            f"{name:22} {r['adapter_ops_s']:>14,.0f} {r['bare_ops_s']:>12,.0f} {r['ratio']:>13.2f}"
        )
    print(f"(median of {args.rounds} rounds x {args.ops} calls, SoftHSMv2 temp token)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

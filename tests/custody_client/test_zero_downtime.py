"""Zero downtime: 4 processes read a secret in a loop through the client while it is
rotated 20 times through the API. No read fails, and every read returns a version (with its
own value) that was current at some moment while the read was in flight."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from custody_client import CustodyClient
from tests.server_fixtures import Server, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-client-rotation")]
ROTATIONS = 20
READERS = 4


def value_of(version: int) -> str:
    return f"rotating-config-value-{version:03d}"


def _reader(url: str, token: str, ca: str, stop, q) -> None:
    reads, failures = [], []
    with CustodyClient(url, token=token, ca=ca, retries=1) as c:
        while not stop.is_set():
            t0 = time.time()
            try:
                s = c.get("prod", "payments/rotating")
            except Exception as exc:  # every failure is reported, none is allowed
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            reads.append((t0, time.time(), s.version, s.value))
    q.put((reads, failures))


def test_reads_never_fail_while_the_secret_rotates(tmp_path_factory):
    root = tmp_path_factory.mktemp("rotation")
    home, pins, tokens, env = server_home(root, {"rot-admin": ("service-admin", ("payments",))})
    pki = make_pki(root / "pki")
    srv = Server(home, pins, pki, "--rate", "100000/second", "--threads", "4", env=env)
    tok, ca = tokens["rot-admin"], str(pki.ca)
    try:
        with CustodyClient(srv.url, token=tok, ca=ca) as admin:
            admin._once("POST", "/v1/prod/data/payments/rotating",
                        json={"data": {"value": value_of(1)}})  # fmt: skip
            ctx = mp.get_context("spawn")
            stop, q = ctx.Event(), ctx.Queue()
            procs = [ctx.Process(target=_reader, args=(srv.url, tok, ca, stop, q))
                     for _ in range(READERS)]  # fmt: skip
            for p in procs:
                p.start()
            time.sleep(2.0)  # the readers are up and reading
            became = {1: 0.0}  # version -> when the rotation that made it current began
            done: dict[int, float] = {}  # version -> when that rotation had finished
            for v in range(2, ROTATIONS + 2):
                t0 = time.time()
                out = admin.rotate("prod", "payments/rotating", value=value_of(v),
                                   overlap_seconds=60)  # fmt: skip
                assert (out["current"], out["previous"]) == (v, v - 1)
                became[v], done[v] = t0, time.time()
                time.sleep(0.05)
            time.sleep(0.5)
            stop.set()
            results = [q.get(timeout=60) for _ in procs]
            for p in procs:
                p.join(timeout=30)
    finally:
        srv.stop()
    failures = [f for _r, fs in results for f in fs]
    assert failures == []
    reads = [r for rs, _f in results for r in rs]
    assert len(reads) > ROTATIONS * READERS  # they read throughout
    ended = {v: done.get(v + 1, float("inf")) for v in became}  # replaced by then
    for t0, t1, version, value in reads:
        assert value == value_of(version)
        # version was current at some moment in [t0, t1]: it became current before the read
        # ended, and its successor's rotation did not finish before the read began
        assert became[version] <= t1 and ended[version] >= t0, (t0, t1, version)
    seen = {v for _a, _b, v, _c in reads}
    assert len(seen) >= ROTATIONS // 2  # the readers saw the rotations happen
    for rs, _f in results:  # each reader only ever moves forward
        versions = [v for _a, _b, v, _c in rs]
        assert versions == sorted(versions)

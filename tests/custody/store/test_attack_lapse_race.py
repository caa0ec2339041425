"""lapse_grants' read-only pre-check (custody/store/access_sql.py) against several
processes at once: each lapsed grant is still returned (so audited as expired) by exactly
one caller, never by two and never by none, on both adapters. Real subprocesses, each
with its own connection, racing over the same store."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections import Counter

from tests.custody.store.test_access_store import T, _grant

N = 120
RACER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from custody.store import open_store
    kind, loc, local, start, T, n = sys.argv[1:7]
    s = open_store(loc if kind == "postgresql" else Path(loc), local=Path(local))
    while time.time() < float(start):
        pass
    got = []
    for k in range(int(n) + 2):
        got += [g.id for g in s.lapse_grants(now=int(T) + k)]
    s.close()
    print(json.dumps(got))
    """
)


def test_each_lapsed_grant_is_returned_exactly_once_across_processes(backend):
    s = backend.open(create=True)
    try:
        for i in range(N):
            s.add_grant(_grant(f"g{i:03d}", f"p/{i}", not_after=T + 1 + i))
        s.add_grant(_grant("g-live", "p/live", not_after=T + 10**6))
    finally:
        s.close()
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACER,
                backend.kind,
                backend.location,
                str(backend.home / "custody.db"),
                str(start),
                str(T),
                str(N),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    seen: Counter[str] = Counter()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        seen.update(json.loads(out))
    assert set(seen) == {f"g{i:03d}" for i in range(N)}, "a lapsed grant was never reported"
    assert max(seen.values()) == 1, [g for g, c in seen.items() if c > 1]
    s = backend.open()
    try:
        assert s.lapse_grants(now=T + N + 5) == []  # all marked, none left to report
        assert [g.id for g in s.lapse_grants(now=T + 10**6)] == ["g-live"]
    finally:
        s.close()

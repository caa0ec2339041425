"""The leader lease (custody/leader.py) on both adapters: one leader at a time; a leader
that stops renewing is replaced once its lease expires and, if it comes back, steps down
before it runs anything; and on PostgreSQL a failover between two replica processes when
the leader is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from custody.leader import Leader, try_acquire
from tests.conftest import ROOT, cli_env
from tests.pg_fixtures import Backend

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_one_leader_and_a_takeover_after_expiry(backend: Backend) -> None:
    a_store, b_store = backend.open(create=True), backend.open()
    clock = Clock()
    ran: list[str] = []
    a = Leader(a_store, lambda: ran.append("a"), clock=clock, ttl=10, host="host-a")
    b = Leader(b_store, lambda: ran.append("b"), clock=clock, ttl=10, host="host-b")
    try:
        assert a.step() is True and b.step() is False
        clock.now += timedelta(seconds=5)
        assert a.step() is True and b.step() is False  # renewed: still a's
        # a stalls (a long GC pause, a partitioned host): it stops renewing
        clock.now += timedelta(seconds=9)
        assert b.step() is False  # not yet expired
        clock.now += timedelta(seconds=2)
        assert b.step() is True  # expired: b takes over
        ran.clear()
        assert a.step() is False  # a comes back: its renewal fails, it steps down
        assert ran == []  # and ran nothing after losing the lease
        # a second replica may not grab a live lease, whatever it claims to be
        assert try_acquire(a_store, "scheduler", now=clock.now, host="host-c") is None
    finally:
        a_store.close()
        b_store.close()


_REPLICA = textwrap.dedent(
    """
    import sys, threading, time
    from datetime import UTC, datetime
    from custody.leader import Leader
    from custody.store import open_store

    url, out, name = sys.argv[1], sys.argv[2], sys.argv[3]
    store = open_store(url)

    def work():
        with open(out, "a") as f:
            f.write(f"{name} {time.time():.3f}\\n")

    Leader(store, work, clock=lambda: datetime.now(UTC), ttl=2, every=0.2,
           host=name).run(threading.Event())
    """
)


@pytest.mark.postgres
def test_failover_when_the_leader_is_killed(tmp_path: Path, pg_url: str) -> None:
    Backend("postgresql", pg_url, tmp_path).open(create=True).close()
    out = tmp_path / "ticks"
    procs = {}
    for name in ("replica-1", "replica-2"):  # two "hosts": no dead-pid shortcut
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", _REPLICA, pg_url, str(out), name], cwd=ROOT, env=cli_env()
        )
        time.sleep(0.8)
    try:
        time.sleep(1.5)
        ticks = [ln.split() for ln in out.read_text().splitlines()]
        leaders = {n for n, _ in ticks}
        assert len(leaders) == 1, leaders  # exactly one replica runs the scheduler
        (leader,) = leaders
        other = next(n for n in procs if n != leader)
        os.kill(procs[leader].pid, signal.SIGKILL)
        killed_at = time.time()
        deadline = killed_at + 10
        while time.time() < deadline:
            ticks = [ln.split() for ln in out.read_text().splitlines()]
            if any(n == other for n, _ in ticks):
                break
            time.sleep(0.1)
        took_over = min(float(t) for n, t in ticks if n == other)
        assert took_over - killed_at <= 2 + 1.0  # within the lease time (+ one poll)
        assert all(float(t) <= killed_at + 0.05 for n, t in ticks if n == leader)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait(10)

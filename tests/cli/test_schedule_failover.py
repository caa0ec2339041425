"""Two ``custody schedule run`` replicas over one PostgreSQL store: only the leader runs
jobs; SIGKILL it and the other takes over within the lease time; and no job runs twice
in one period, across the failover."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env, run_cli
from tests.rekey_fixtures import write_pins

pytestmark = [pytest.mark.postgres, pytest.mark.hsm]
LEASE, PERIOD = 3, 1.0


def runs(out: Path) -> list[tuple[str, float]]:
    """(job, claim time) of every job the replica writing *out* ran."""
    got = []
    for line in out.read_text().splitlines():
        for r in json.loads(line)["ran"]:
            got.append((r["job"], datetime.fromisoformat(r["started"]).timestamp()))
    return got


def wait_for(pred, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_one_leader_runs_the_jobs_and_another_takes_over(tmp_path: Path, pg_url: str) -> None:
    pins = write_pins(tmp_path / "pins")
    home = tmp_path / "home"
    r = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--dev-root", "--store",
                pg_url)  # fmt: skip
    assert r.returncode == 0, r.stderr
    procs, outs = {}, {}
    for name in ("replica-1", "replica-2"):  # two "hosts": no dead-pid shortcut
        outs[name] = tmp_path / f"{name}.out"
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "custody_cli", "schedule", "run", "--home", str(home),
             "--pin-file", str(pins), "--interval", str(PERIOD), "--lease-seconds",
             str(LEASE), "--host-name", name, "--job", "checkpoint", "--job",
             "expiry-warnings", "--json"],
            cwd=ROOT, env=cli_env(), stdout=outs[name].open("w"),
        )  # fmt: skip
        if name == "replica-1":
            assert wait_for(lambda: runs(outs["replica-1"]) != [], 30)
    try:
        time.sleep(2.5)
        assert runs(outs["replica-1"]) and runs(outs["replica-2"]) == []  # one leader only
        os.kill(procs["replica-1"].pid, signal.SIGKILL)
        killed = time.time()
        assert wait_for(lambda: runs(outs["replica-2"]) != [], 20)
        took_over = min(t for _j, t in runs(outs["replica-2"]))
        assert took_over - killed <= LEASE + 1.5  # within the lease (+ a poll, the seconds)
        time.sleep(2.5)
        everything = runs(outs["replica-1"]) + runs(outs["replica-2"])
        for job in ("checkpoint", "expiry-warnings"):
            starts = sorted(t for j, t in everything if j == job)
            assert len(starts) >= 3, (job, starts)
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert min(gaps) >= PERIOD - 1e-3, (job, gaps)  # never twice in one period
        st = run_cli("schedule", "status", "--home", str(home), "--json")
        doc = json.loads(st.stdout)
        assert doc["leader"]["host"] == "replica-2" and not doc["leader"]["expired"]
        assert doc["jobs"]["checkpoint"]["replica"].startswith("replica-2:")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
    assert procs["replica-2"].returncode == 0  # SIGTERM: a clean exit, the lease released
    st = run_cli("schedule", "status", "--home", str(home), "--json")
    assert json.loads(st.stdout)["leader"] is None

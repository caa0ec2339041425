"""The access seal on a PostgreSQL store with concurrent writers: two processes add
principals at once, each write re-sealing the rows. Every re-seal reads the generation and
the rows under the store's write lock (``pg_advisory_xact_lock``, taken by each write
transaction), so no two writers seal the same generation, and no write's rows are left
outside the seal: afterwards the rows pass their seal and the generation rose by exactly
one per write."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from tests.cli.test_postgres_store_cli import pg_home
from tests.conftest import run_cli

pytestmark = [pytest.mark.postgres, pytest.mark.hsm]
PER_WRITER = 4


def _gen(url: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT value FROM meta WHERE key='access_seal_gen'").fetchone()
    return int(row[0]) if row else 0


def test_concurrent_sealed_writes_each_get_their_own_generation(
    tmp_path: Path, pg_url: str
) -> None:
    home, pins = pg_home(tmp_path, pg_url)
    h = ("--home", str(home), "--pin-file", str(pins))
    r = run_cli("principal", "add", "first", "--role", "service-user", "--service-account",
                "--service", "billing", "--token-out", str(tmp_path / "first.token"),
                *h)  # fmt: skip
    assert r.returncode == 0, r.stderr
    before = _gen(pg_url)
    assert before > 0
    failures: list[str] = []

    def writer(w: int) -> None:
        for i in range(PER_WRITER):
            name = f"svc{w}x{i}"
            r = run_cli("principal", "add", name, "--role", "service-user",
                        "--service-account", "--service", "billing",
                        "--token-out", str(tmp_path / f"{name}.token"), *h)  # fmt: skip
            if r.returncode != 0:
                failures.append(r.stderr)

    ts = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert failures == []
    assert _gen(pg_url) == before + 2 * PER_WRITER  # one generation per write, none shared

    def add(name: str):  # a sealed write checks the rows against the seal first
        return run_cli("principal", "add", name, "--role", "service-user", "--service-account",
                       "--service", "billing", "--token-out", str(tmp_path / f"{name}.token"),
                       *h)  # fmt: skip

    r = add("after")
    assert r.returncode == 0 and "seal" not in r.stderr, r.stderr
    names = run_cli("principal", "list", "--json", "--home", str(home)).stdout
    assert all(f'"svc{w}x{i}"' in names for w in range(2) for i in range(PER_WRITER)), names
    # and the seal is still a seal: a row changed behind its back is refused
    with psycopg.connect(pg_url) as c:
        c.execute("UPDATE principals SET role='super-admin' WHERE name='svc0x0'")
    r = add("later")
    assert r.returncode == 6 and "seal" in r.stderr, (r.returncode, r.stderr)

"""Lockout shared by the replicas of one PostgreSQL store (issue 17): failed
authentications are counted in the store, not in each host's ``HOME/guard.db``, so two
``custody serve`` on two homes (two hosts) over one store lock a client out after N
failures *in total*, audited once; the rate limit stays per host.

The attacker sprays wrong tokens over both replicas to get 2N tries, and the operator with
one host's disk deletes that host's ``guard.db`` to lift a lockout; neither works."""

from __future__ import annotations

import json
import shutil
import ssl
import threading
from pathlib import Path

import httpx
import pytest

from custody.audit.log import AuditLog
from custody.config import Home
from custody.errors import StorageError
from custody.store import open_lockout, open_store
from custody.store.postgres_guard import PostgresLockout
from custody.store.sqlite_guard import GuardDb
from custody_server.guard import Guard, GuardLimits, Refused
from tests.conftest import run_cli
from tests.rekey_fixtures import cli, write_pins
from tests.server_fixtures import Server, make_pki

pytestmark = [pytest.mark.postgres]
LIMITS = GuardLimits(lockout_after=3, lockout_window=300, lockout_seconds=60)


def _migrated(pg_url: str) -> None:
    open_store(pg_url, create=True).close()  # runs MIGRATIONS, the guard tables included


def test_two_replicas_count_failures_together_and_one_engages_it(pg_url, tmp_path):
    _migrated(pg_url)
    a, b = PostgresLockout(pg_url), PostgresLockout(pg_url)
    # each "host" has its own guard.db for the rate: the lockout is not there
    ga = Guard(LIMITS, state=GuardDb(tmp_path / "a.db"), lockout=a)
    gb = Guard(LIMITS, state=GuardDb(tmp_path / "b.db"), lockout=b)
    try:
        assert [ga.failed("198.51.100.7"), gb.failed("198.51.100.7")] == [False, False]
        assert gb.failed("198.51.100.7") is True  # the third in total engages it
        for g in (ga, gb):  # both replicas refuse the client now, with Retry-After
            with pytest.raises(Refused) as exc:
                g.check_locked("198.51.100.7")
            assert exc.value.status == 403 and (exc.value.retry_after or 0) >= 59
        ga.check_locked("198.51.100.8")  # another address is not affected
        # the per-host files hold no lockout: deleting one lifts nothing
        for f in ("a.db", "b.db"):
            (tmp_path / f).unlink()
        fresh = Guard(LIMITS, state=GuardDb(tmp_path / "a.db"), lockout=PostgresLockout(pg_url))
        with pytest.raises(Refused):
            fresh.check_locked("198.51.100.7")
    finally:
        a.close()
        b.close()


def test_concurrent_failures_over_two_replicas_engage_exactly_once_per_n(pg_url):
    """16 failures from 8 threads over two replicas, N=4: the count and the decision are
    atomic, so exactly 4 lockouts engage (each clears the count), never a double one."""
    _migrated(pg_url)
    reps = [PostgresLockout(pg_url), PostgresLockout(pg_url)]
    engaged: list[bool] = []
    lock = threading.Lock()

    def spray(rep: PostgresLockout) -> None:
        for _ in range(2):
            got = rep.fail("203.0.113.5", 1_800_000_000.0, window=300, after=4, seconds=60)
            with lock:
                engaged.append(got)

    threads = [threading.Thread(target=spray, args=(reps[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert len(engaged) == 16 and engaged.count(True) == 4
        assert reps[0].locked_until("203.0.113.5", 1_800_000_000.0) == 1_800_000_060.0
        assert reps[1].locked_until("203.0.113.5", 1_800_000_061.0) is None  # it ends
    finally:
        for r in reps:
            r.close()


def test_open_lockout_is_the_store_for_postgres_and_none_for_sqlite(pg_server, tmp_path):
    assert open_lockout(tmp_path / "custody.db") is None  # SQLite: HOME/guard.db, per host
    url = pg_server.url(pg_server.new_database())
    bare = open_lockout(url)  # a database custody never migrated: no guard tables
    assert isinstance(bare, PostgresLockout)
    try:
        with pytest.raises(StorageError) as exc:  # a typed error, not a driver's
            bare.fail("192.0.2.1", 1.0, window=1, after=1, seconds=1)
        assert "192.0.2.1" not in str(exc.value)
    finally:
        bare.close()
    _migrated(url)
    lk = open_lockout(url)
    assert isinstance(lk, PostgresLockout)
    try:
        assert lk.fail("192.0.2.1", 1.0, window=10, after=1, seconds=5) is True
        assert lk.locked_until("192.0.2.1", 2.0) == 6.0
    finally:
        lk.close()


def _entries(home: Path) -> list[dict]:
    log = AuditLog.for_home(Home(home))
    try:
        return [json.loads(x) for x in log.lines()]
    finally:
        log.close()


@pytest.mark.hsm
def test_two_servers_on_two_homes_over_one_store_lock_out_after_n_in_total(pg_url, tmp_path):
    pins = write_pins(tmp_path / "pins")
    home = tmp_path / "host-a" / "home"
    r = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--dev-root", "--store",
                pg_url)  # fmt: skip
    assert r.returncode == 0, r.stderr
    tok = tmp_path / "svc.token"
    cli(home, pins, "principal", "add", "svc", "--role", "service-user", "--service-account",
        "--service", "payments", "--token-out", str(tok))  # fmt: skip
    token = tok.read_text().strip()
    home_b = tmp_path / "host-b" / "home"  # another host: its own files, the same store
    shutil.copytree(home, home_b)
    (home_b / "guard.db").unlink(missing_ok=True)
    pki = make_pki(tmp_path / "pki")
    flags = ("--lockout-after", "3", "--lockout-seconds", "60")
    sa = Server(home, pins, pki, *flags)
    try:
        sb = Server(home_b, pins, pki, *flags)
    except BaseException:
        sa.stop()
        raise
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    wrong = {"Authorization": "Bearer " + "w" * 43}
    right = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(verify=ctx, timeout=30) as c:
            assert c.get(f"{sa.url}/api/v1/whoami", headers=right).status_code == 200
            codes = [c.get(f"{s.url}/api/v1/whoami", headers=wrong).status_code
                     for s in (sa, sb, sa)]  # fmt: skip
            assert codes == [401, 401, 401]
            # the third failure in total locked the client out on both hosts, right token or
            # not (per host each would have allowed 3 of its own)
            for s in (sb, sa):
                got = c.get(f"{s.url}/api/v1/whoami", headers=right)
                assert got.status_code == 403 and "locked out" in got.json()["error"], got.text
            # host b's operator deletes its guard.db: the lockout is in the store
            (home_b / "guard.db").unlink(missing_ok=True)
            assert c.get(f"{sb.url}/api/v1/whoami", headers=right).status_code == 403
    finally:
        sa.stop()
        sb.stop()
    log = _entries(home)
    lockouts = [e for e in log if e["op"] == "api lockout"]
    assert len(lockouts) == 1, lockouts  # audited once, by the replica that engaged it
    assert lockouts[0]["target"] == "127.0.0.1" and lockouts[0]["details"]["failures"] == 3
    assert len([e for e in log if e["op"] == "api authenticate"]) >= 3
    assert token not in json.dumps(log)

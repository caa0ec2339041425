"""LISTEN/NOTIFY across replicas on PostgreSQL: a change to the access rows committed on
replica A reaches replica B's watch at once, and only on commit. B drops its seal's checked
pair, and a revocation made on A is refused on B at its very next decision. A raw SQL
write that sends no notification is still caught by B's seal: nothing trusts the absence
of a notification. Real PostgreSQL (two store connections plus the watch's own), a real
SoftHSMv2 token, a real audit log."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from custody.access import AccessControl, AuthError
from custody.access.seal import AccessSeal
from custody.audit.log import AuditLog
from custody.errors import IntegrityError
from custody.store import open_store
from custody.store.postgres_notify import access_table
from tests.custody.access.seal_fixtures import seal_on

pytestmark = [pytest.mark.postgres, pytest.mark.hsm]


def _wait(pred, timeout: float = 5.0) -> float | None:
    """Seconds until *pred* held, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


@pytest.fixture
def replicas(tmp_path: Path, pg_url: str, hsm):
    a = open_store(pg_url, create=True, local=tmp_path / "a" / "custody.db")
    b = open_store(pg_url, local=tmp_path / "b" / "custody.db")
    log = AuditLog(tmp_path / "audit.db", durable=False)
    seal_a = seal_on(a, hsm, log)
    seal_b = AccessSeal(b, hsm, seal_a.label, log)  # the same token key, another replica
    yield a, b, log, seal_a, seal_b
    log.close()
    a.close()
    b.close()


def test_the_watch_hears_access_writes_only_on_commit(replicas) -> None:
    a, b, _log, _sa, _sb = replicas
    heard: list[str] = []
    got = threading.Event()

    def on_change(table: str) -> None:
        heard.append(table)
        if table != "*":
            got.set()

    watch = b.watch_access(on_change)
    try:
        assert watch.listening.wait(10) and heard == ["*"]  # first: drop everything
        ac = AccessControl(a, _log)
        with a.transaction():
            ac.add_principal("svc", kind="service", role="service-user",
                             services=("payments",), by="root")  # fmt: skip
            time.sleep(0.5)
            assert heard == ["*"]  # not before the commit
        assert got.wait(5) and "principals" in heard
        n = len(heard)
        with a.transaction():
            a.set_meta("unrelated", "x")  # not an access row: no notification
        time.sleep(0.5)
        assert len(heard) == n
        with pytest.raises(RuntimeError), a.transaction():  # rolled back: never delivered
            ac.revoke("svc", by="root")
            raise RuntimeError("abort")
        time.sleep(0.5)
        assert len(heard) == n
    finally:
        watch.close()
    assert access_table("UPDATE principals SET role='x'") == "principals"
    assert access_table("DELETE FROM grants WHERE id=?") == "grants"
    assert access_table("UPDATE objects SET wrapped=?") is None


def test_a_revocation_on_one_replica_is_refused_on_the_other_at_once(replicas) -> None:
    a, b, log, seal_a, seal_b = replicas
    ac_a = AccessControl(a, log, seal=seal_a)
    ac_b = AccessControl(b, log, seal=seal_b)
    ac_a.check_rows()  # first use: seals the (empty) rows
    _p, token = ac_a.add_principal("svc", kind="service", role="service-user",
                                   services=("payments",), by="root")  # fmt: skip
    assert token is not None
    assert ac_b.authenticate_token(token).name == "svc"  # B checks the seal: pair cached
    assert seal_b._checked is not None
    watch = b.watch_access(seal_b.invalidate)
    try:
        assert watch.listening.wait(10)
        before = seal_b.invalidations
        ac_a.revoke("svc", by="root", token_only=True)  # on replica A
        took = _wait(lambda: seal_b.invalidations > before)
        assert took is not None and took < 2.0, took  # B dropped its pair at once
        assert seal_b._checked is None
        with pytest.raises(AuthError):
            ac_b.authenticate_token(token)  # and refuses at its next decision
    finally:
        watch.close()


def test_a_raw_write_sends_no_notification_but_the_seal_still_refuses_it(
    replicas, pg_url: str
) -> None:
    """The operator with the database writes a principal row by hand: no NOTIFY reaches
    B, and B's cached pair is not dropped, yet B refuses, because the pair is keyed by the
    digest of the rows it reads at each decision."""
    a, b, log, seal_a, seal_b = replicas
    ac_a = AccessControl(a, log, seal=seal_a)
    ac_b = AccessControl(b, log, seal=seal_b)
    ac_a.check_rows()
    _p, token = ac_a.add_principal("svc", kind="service", role="service-user",
                                   services=("payments",), by="root")  # fmt: skip
    assert token is not None and ac_b.authenticate_token(token).name == "svc"
    watch = b.watch_access(seal_b.invalidate)
    try:
        assert watch.listening.wait(10)
        time.sleep(0.3)
        before = seal_b.invalidations
        with psycopg.connect(pg_url, autocommit=True) as c:
            c.execute("UPDATE principals SET role='super-admin' WHERE name='svc'")
        time.sleep(0.5)
        assert seal_b.invalidations == before  # nothing was notified
        with pytest.raises(IntegrityError, match="fail their seal"):
            ac_b.authenticate_token(token)
    finally:
        watch.close()


def test_a_watch_that_loses_its_connection_drops_the_caches_and_listens_again(
    replicas, pg_url: str
) -> None:
    _a, b, _log, _sa, _sb = replicas
    heard: list[str] = []
    watch = b.watch_access(heard.append)
    try:
        assert watch.listening.wait(10)
        with psycopg.connect(pg_url, autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()")  # fmt: skip
        assert _wait(lambda: heard.count("*") >= 3, 10) is not None  # gap, then re-listen
        assert _wait(watch.listening.is_set, 10) is not None
    finally:
        watch.close()

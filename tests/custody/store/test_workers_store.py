"""The worker batches of the store port (WorkerStore) on both adapters: the lease check,
a takeover that waits for the old owner's open batch and then stops it, and on PostgreSQL
two batches claiming disjoint rows at the same time (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import threading
import time

import pytest

from custody.store.rows import LeaseRow, NewKek, NewObject, NewRoot
from tests.custody.store.conftest import Backend

NOW = "2026-01-01T00:00:00+00:00"
LATER = "2026-01-01T00:05:00+00:00"


def _lease(token: str, expires: str = LATER) -> LeaseRow:
    return LeaseRow(
        name="rekey", token=token, owner_pid=1, owner_host="h", acquired=NOW, expires=expires
    )


def _seed(s, n: int) -> None:
    s.add_root(NewRoot(version=1, kcv="aaaaaa", epoch=None, blob=None), activate=True, now=NOW)
    s.add_kek(NewKek(branch="data", version=1, kcv="b", root_version=1, wrapped=b"k"), now=NOW)
    s.add_objects(
        [
            NewObject(
                uid=i.to_bytes(16, "big"),
                kind="dek",
                branch="data",
                kek_version=1,
                wrapped=b"w",
                digest=b"d",
                label=None,
            )
            for i in range(n)
        ],
        now=NOW,
    )


def test_lease_check_names_the_owner_and_the_expiry(backend: Backend) -> None:
    s = backend.open(create=True)
    try:
        s.put_lease(_lease("mine"))
        with pytest.raises(Exception, match="inside a transaction"):
            s.lease_holds("rekey", "mine", now=NOW)
        with s.batch_transaction():
            assert s.lease_holds("rekey", "mine", now=NOW)
            assert not s.lease_holds("rekey", "theirs", now=NOW)
            assert not s.lease_holds("rekey", "mine", now="2026-01-01T00:06:00+00:00")
    finally:
        s.close()


def test_a_takeover_waits_for_the_open_batch_then_stops_the_old_owner(backend: Backend) -> None:
    old = backend.open(create=True)
    try:
        old.put_lease(_lease("old"))
        took: list[float] = []

        def take_over() -> None:
            new = backend.open()  # its own connection, in its own thread
            try:
                with new.transaction():
                    new.put_lease(_lease("new"))
                took.append(time.monotonic())
            finally:
                new.close()

        with old.batch_transaction():
            assert old.lease_holds("rekey", "old", now=NOW)
            t = threading.Thread(target=take_over)
            t.start()
            time.sleep(0.4)
            assert took == []  # the takeover waits: the batch may still commit
            committed = time.monotonic()
        t.join(10)
        assert took and took[0] >= committed
        with old.batch_transaction():  # every later batch of the old owner sees it lost
            assert not old.lease_holds("rekey", "old", now=NOW)
    finally:
        old.close()


@pytest.mark.postgres
def test_two_batches_claim_disjoint_rows_at_once(pg_url: str, tmp_path) -> None:
    b = Backend("postgresql", pg_url, tmp_path)
    a, c = b.open(create=True), b.open()
    try:
        _seed(a, 20)
        with a.batch_transaction():
            first = a.claim_objects("data", 1, 8)
            t0 = time.monotonic()
            with c.batch_transaction():  # does not wait for the first batch
                second = c.claim_objects("data", 1, 8)
            assert time.monotonic() - t0 < 2.0
        assert len(first) == len(second) == 8
        assert not {r.id for r in first} & {r.id for r in second}
    finally:
        a.close()
        c.close()

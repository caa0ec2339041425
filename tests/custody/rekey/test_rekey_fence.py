"""The re-key lease fences the job's last effects too: a worker whose lease was taken over
while it verified (a long ``--verify all``, a stall) marks nothing done and retires
nothing; it raises LeaseLost, and the job is resumed by whoever holds the lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from custody.clock import iso
from custody.deployment import open_deployment
from custody.leader import LeaseLost
from custody.rekey import jobs as rekey
from custody.rekey import lease as rekey_lease
from custody.store.rows import LeaseRow
from tests.conftest import TEST_PIN
from tests.rekey_fixtures import cli, cli_json, make_deployment

pytestmark = pytest.mark.hsm
N = 1500


def test_a_worker_that_lost_its_lease_while_verifying_finishes_and_retires_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, pins = make_deployment(tmp_path, data_objects=N)
    cli(home, pins, "kek", "rotate", "--branch", "data")
    real_verify = rekey.verify_branch
    stolen: list[str] = []

    def verify_then_lose_the_lease(hierarchy: Any, *a: Any, **kw: Any) -> Any:
        out = real_verify(hierarchy, *a, **kw)
        st = hierarchy.store
        with st.transaction():  # meanwhile, the lease expired and another worker took it
            now = datetime.now(UTC)
            st.put_lease(LeaseRow(name=rekey_lease.LEASE_NAME, token="c" * 32, owner_pid=1,
                                  owner_host="other-host", acquired=iso(now),
                                  expires=iso(now + timedelta(seconds=300))))  # fmt: skip
        stolen.append("yes")
        return out

    monkeypatch.setattr(rekey, "verify_branch", verify_then_lose_the_lease)
    with open_deployment(home, TEST_PIN) as dep:
        with pytest.raises(LeaseLost):
            rekey.run(dep.hierarchy, dep.config, verify="all", batch=500)
        assert stolen == ["yes"]
        job = dep.store.running_job("data")
        assert job is not None and job.done == N  # moved, but not marked done
        v1 = next(k for k in dep.hierarchy.keks("data") if k.version == 1)
        assert v1.state.value == "decrypt-only" and v1.objects == 0  # not retired
        row = dep.store.lease(rekey_lease.LEASE_NAME)
        assert row is not None and row.owner_host == "other-host"  # not released by the loser
        with dep.store.transaction():
            dep.store.drop_lease(rekey_lease.LEASE_NAME, "c" * 32)  # the other worker ends
    monkeypatch.undo()
    out = cli_json(home, pins, "rekey", "run", "--verify", "all")  # resumes, then retires
    assert out["status"] == "done" and out["retired"][0] == "data/v1: disabled"


def _other_lease(st: Any) -> None:
    with st.transaction():  # the lease expired and another worker took it
        now = datetime.now(UTC)
        st.put_lease(LeaseRow(name=rekey_lease.LEASE_NAME, token="c" * 32, owner_pid=1,
                              owner_host="other-host", acquired=iso(now),
                              expires=iso(now + timedelta(seconds=300))))  # fmt: skip


def test_a_lease_lost_mid_verify_stops_the_verify_at_the_next_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, pins = make_deployment(tmp_path, data_objects=N)
    cli(home, pins, "kek", "rotate", "--branch", "data")
    monkeypatch.setattr(rekey, "VERIFY_BEAT", 500)  # three pages of 500
    real_verify = rekey.verify_branch
    beats: list[int] = []
    checked: list[int] = []

    def verify_losing_the_lease_after_one_page(hierarchy: Any, *a: Any, **kw: Any) -> Any:
        beat = kw["beat"]

        def stolen_then_beat() -> None:
            if not beats:
                _other_lease(hierarchy.store)
            beats.append(1)
            beat()

        kw["beat"] = stolen_then_beat
        out = real_verify(hierarchy, *a, **kw)
        checked.append(out[0])  # never reached: the beat raised
        return out

    monkeypatch.setattr(rekey, "verify_branch", verify_losing_the_lease_after_one_page)
    with open_deployment(home, TEST_PIN) as dep:
        with pytest.raises(LeaseLost):
            rekey.run(dep.hierarchy, dep.config, verify="all", batch=500)
        assert beats == [1] and checked == []  # stopped at the first beat, 1000 unread
        job = dep.store.running_job("data")
        assert job is not None and job.done == N  # moved, not marked done
        v1 = next(k for k in dep.hierarchy.keks("data") if k.version == 1)
        assert v1.state.value == "decrypt-only"  # not retired
        row = dep.store.lease(rekey_lease.LEASE_NAME)
        assert row is not None and row.owner_host == "other-host"


def test_a_verify_longer_than_the_lease_keeps_it_and_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the beat, a ``--verify all`` that outlasts the lease's TTL lets a waiting
    worker take over, and on a store big enough no worker ever finishes the job."""
    home, pins = make_deployment(tmp_path, data_objects=N)
    cli(home, pins, "kek", "rotate", "--branch", "data")
    monkeypatch.setattr(rekey, "VERIFY_BEAT", 500)
    t = [datetime.now(UTC)]

    def clock() -> datetime:
        t[0] += timedelta(milliseconds=10)
        return t[0]

    real_verify = rekey.verify_branch
    seen: list[tuple[bool, bool, bool]] = []

    def slow_verify(hierarchy: Any, *a: Any, **kw: Any) -> Any:
        beat, st = kw["beat"], hierarchy.store

        def a_page_longer_than_the_ttl_then_beat() -> None:
            t[0] += timedelta(seconds=rekey_lease.LEASE_SECONDS + 30)
            before = st.lease(rekey_lease.LEASE_NAME)
            assert before is not None
            beat()
            after = st.lease(rekey_lease.LEASE_NAME)
            assert after is not None and after.token == before.token
            other = rekey_lease.try_acquire(st, now=t[0], ttl=60, pid=1, host="other-host")
            seen.append(
                (
                    before.expires < iso(t[0]),
                    after.expires > iso(t[0]),
                    isinstance(other, rekey_lease.Lease),
                )
            )

        kw["beat"] = a_page_longer_than_the_ttl_then_beat
        return real_verify(hierarchy, *a, **kw)

    monkeypatch.setattr(rekey, "verify_branch", slow_verify)
    with open_deployment(home, TEST_PIN) as dep:
        rep = rekey.run(dep.hierarchy, dep.config, verify="all", batch=500, clock=clock)
        assert rep.status == "done" and rep.jobs[0].verified == N
        # each time: expired before the beat (another worker could have taken it), renewed
        # by the beat, and the waiting worker was refused
        assert seen == [(True, True, False)] * 3  # after each full page of 500
        v1 = next(k for k in dep.hierarchy.keks("data") if k.version == 1)
        assert v1.objects == 0 and v1.state.value != "decrypt-only"  # retired

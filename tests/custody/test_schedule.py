"""The scheduler (custody/schedule.py) on both adapters: only the lease holder runs jobs,
each once per period; a failing job is recorded and the others still run; and a leader
that loses its lease in the middle of a tick runs nothing more, while the replica that
took over does not run again what the old leader already ran in that period."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from custody.clock import iso, utcnow
from custody.errors import StorageError
from custody.leader import SCHEDULER, Heartbeat, LeaseLost, renew, try_acquire
from custody.schedule import Fence, Job, Scheduler, last_run, status
from custody.store import open_store
from custody.store.port import Store
from custody.store.rows import LeaseRow
from tests.pg_fixtures import Backend

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Audit:
    """Records what the scheduler audits, running the body the way run_audited does."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, str]] = []

    def __call__(
        self, op: str, target: str, details: Mapping[str, object], body: Callable[[], int]
    ) -> int:
        self.entries.append((op, target, "intent"))
        try:
            rc = body()
        except Exception:
            self.entries.append((op, target, "failed"))
            raise
        self.entries.append((op, target, "ok" if rc == 0 else "failed"))
        return rc


def job(name: str, ran: list[str], who: str) -> Job:
    def run(_fence: Fence) -> Mapping[str, Any]:
        ran.append(f"{who}:{name}")
        return {"detail": f"{name} done"}

    return Job(name=name, run=run)


def sched(store: Store, jobs: tuple[Job, ...], clock: Clock, host: str, **kw: Any) -> Scheduler:
    return Scheduler(store, jobs, audited=kw.pop("audited", Audit()), clock=clock, host=host, **kw)


def test_only_the_leader_runs_each_job_once_per_period(backend: Backend) -> None:
    a_store, b_store = backend.open(create=True), backend.open()
    clock, audit = Clock(), Audit()
    ran: list[str] = []
    names = ("one", "two")
    a = sched(a_store, tuple(job(n, ran, "a") for n in names), clock, "host-a",
              audited=audit, period=60, ttl=10)  # fmt: skip
    b = sched(b_store, tuple(job(n, ran, "b") for n in names), clock, "host-b",
              period=60, ttl=10)  # fmt: skip
    try:
        rep = a.tick()
        assert rep.leader and [r.job for r in rep.ran] == ["one", "two"]
        assert not b.tick().leader
        assert ran == ["a:one", "a:two"]
        assert audit.entries == [
            (op, n, o)
            for n in names
            for op, o in (("schedule.run", "intent"), ("schedule.run", "ok"))
        ]
        for t in (5, 5, 5):  # within the period: renewed, nothing runs again
            clock.now += timedelta(seconds=t)
            assert a.tick().ran == () and not b.tick().leader
        assert ran == ["a:one", "a:two"]
        clock.now = T0 + timedelta(seconds=60)
        assert [r.job for r in a.tick().ran] == ["one", "two"]  # the next period
        assert ran == ["a:one", "a:two", "a:one", "a:two"]
        rec = last_run(b_store, "one")
        assert rec is not None and rec.outcome == "ok" and rec.replica.startswith("host-a:")
        st = status(b_store, names, clock.now)
        assert st["leader"]["host"] == "host-a" and st["leader"]["expired"] is False
        assert st["jobs"]["two"]["detail"] == "two done"
    finally:
        a_store.close()
        b_store.close()


def test_a_failing_job_is_recorded_and_the_others_still_run(backend: Backend) -> None:
    store = backend.open(create=True)
    clock, audit = Clock(), Audit()
    ran: list[str] = []

    def broken(_fence: Fence) -> Mapping[str, Any]:
        raise StorageError("The store is read-only", "Check the disk.")

    def buggy(_fence: Fence) -> Mapping[str, Any]:
        raise KeyError("a bug")

    jobs = (Job(name="broken", run=broken), Job(name="buggy", run=buggy), job("fine", ran, "a"))
    s = sched(store, jobs, clock, "host-a", audited=audit, period=60, ttl=10)
    try:
        rep = s.tick()
        assert [(r.job, r.outcome) for r in rep.ran] == [
            ("broken", "failed"), ("buggy", "failed"), ("fine", "ok")]  # fmt: skip
        assert ran == ["a:fine"]
        broke = last_run(store, "broken")
        assert broke is not None and broke.detail == "The store is read-only"
        assert ("schedule.run", "broken", "failed") in audit.entries
        # a failed job waits for its next period like any other (no hot retry loop)
        clock.now += timedelta(seconds=30)
        assert s.tick().ran == ()
    finally:
        store.close()


def test_a_leader_that_loses_the_lease_mid_tick_runs_nothing_more(backend: Backend) -> None:
    """The fence: a leader stalls inside its first job for longer than the lease (a GC
    pause, a slow HSM); another replica takes over meanwhile. The old leader's next claim
    fails on the lease token, so it runs none of the remaining jobs, and the new leader
    does not run again the job the old one already ran in this period."""
    a_store, b_store = backend.open(create=True), backend.open()
    clock = Clock()
    ran: list[str] = []
    b = sched(b_store, tuple(job(n, ran, "b") for n in ("one", "two")), clock, "host-b",
              period=60, ttl=10)  # fmt: skip

    def stall(_fence: Fence) -> Mapping[str, Any]:
        ran.append("a:one")
        clock.now += timedelta(seconds=11)  # the lease expires while a is stuck here
        assert b.tick().leader  # b takes over, and runs "two" (due) but not "one"
        return {}

    a = sched(a_store, (Job(name="one", run=stall), job("two", ran, "a")), clock, "host-a",
              period=60, ttl=10)  # fmt: skip
    try:
        rep = a.tick()
        assert rep.stepped_down and not rep.leader and [r.job for r in rep.ran] == ["one"]
        assert ran == ["a:one", "b:two"]  # each job once in the period, "two" only by b
        assert not a.tick().leader  # and a stays a standby while b renews
        clock.now += timedelta(seconds=5)
        assert b.tick().leader and not a.tick().leader
        assert ran == ["a:one", "b:two"]
    finally:
        a_store.close()
        b_store.close()


def test_a_stale_leader_cannot_renew_with_a_forged_record(backend: Backend) -> None:
    """An insider replica that rewrites the job record to make a job look never-run still
    cannot run it while another replica holds the lease: claims go through the lease."""
    a_store, b_store = backend.open(create=True), backend.open()
    clock = Clock()
    ran: list[str] = []
    a = sched(a_store, (job("one", ran, "a"),), clock, "host-a", period=60, ttl=10)
    b = sched(b_store, (job("one", ran, "b"),), clock, "host-b", period=60, ttl=10)
    try:
        assert a.tick().leader
        with b_store.transaction():
            b_store.set_meta("schedule:job:one", '{"job":"one","replica":"x","started":'
                             '"2000-01-01T00:00:00+00:00"}')  # fmt: skip
        assert not b.tick().leader
        assert ran == ["a:one"]
    finally:
        a_store.close()
        b_store.close()


def test_bad_settings_are_refused(backend: Backend) -> None:
    store = backend.open(create=True)
    try:
        with pytest.raises(ValueError):
            Scheduler(store, (), audited=Audit(), clock=Clock(), ttl=0)
    finally:
        store.close()


# -- heartbeat and fence: a job longer than the lease -------------------------------------
def test_the_heartbeat_keeps_the_lease_through_a_job_longer_than_the_lease(
    backend: Backend,
) -> None:
    """A job runs 2 lease times (real time, ttl 2 s; the store keeps expiries to the
    second). The heartbeat, on its own store connection, renews the lease meanwhile, so
    the other replica stays a standby all along and the job's fence check at the end
    passes; without the heartbeat the lease would lapse after 2 s and b would lead."""
    a_store, b_store = backend.open(create=True), backend.open()
    ran: list[str] = []
    b = Scheduler(b_store, (job("long", ran, "b"),), audited=Audit(), clock=utcnow,
                  host="host-b", period=60, ttl=2)  # fmt: skip
    b_led: list[bool] = []

    def long(fence: Fence) -> Mapping[str, Any]:
        end = time.monotonic() + 4.0
        while time.monotonic() < end:  # no fence check in here: only the heartbeat renews
            b_led.append(b.tick().leader)
            time.sleep(0.2)
        fence.check()
        ran.append("a:long")
        return {"detail": "long done"}

    a = Scheduler(a_store, (Job(name="long", run=long),), audited=Audit(), clock=utcnow,
                  host="host-a", period=60, ttl=2, reopen=backend.open)  # fmt: skip
    try:
        rep = a.tick()
        assert rep.leader and [(r.job, r.outcome) for r in rep.ran] == [("long", "ok")]
        assert len(b_led) >= 12 and not any(b_led)  # b never led while a worked
        assert ran == ["a:long"]
        assert a.tick().leader and not b.tick().leader
    finally:
        a.close()
        a_store.close()
        b_store.close()


def test_a_holder_that_lost_its_lease_mid_job_stops_before_its_next_effect(
    backend: Backend,
) -> None:
    """The fence: while a's job works, the lease row is taken over (another replica's
    token, as after an expiry). a's next ``fence.check()`` raises LeaseLost, so the
    effect after it never happens; the run is recorded as failed and a steps down; the
    heartbeat does not win the lease back."""
    a_store, b_store = backend.open(create=True), backend.open()
    effects: list[int] = []

    def work(fence: Fence) -> Mapping[str, Any]:
        for i in range(5):
            fence.check()
            effects.append(i)
            if i == 1:
                with b_store.transaction():  # another replica's claim replaces a's
                    later = iso(utcnow() + timedelta(seconds=60))
                    b_store.put_lease(LeaseRow(
                        name=SCHEDULER, token="b" * 32, owner_pid=1, owner_host="host-b",
                        acquired=iso(utcnow()), expires=later))  # fmt: skip
        return {}

    audit = Audit()
    a = Scheduler(a_store, (Job(name="work", run=work), job("after", [], "a")), audited=audit,
                  clock=utcnow, host="host-a", period=60, ttl=5, reopen=backend.open)  # fmt: skip
    try:
        rep = a.tick()
        assert effects == [0, 1]  # stopped before effect 2
        assert rep.stepped_down and not rep.leader
        assert [(r.job, r.outcome, r.detail) for r in rep.ran] == [
            ("work", "failed", "This replica lost the scheduler lease")]  # fmt: skip
        assert ("schedule.run", "work", "failed") in audit.entries
        assert ("schedule.run", "after", "intent") not in audit.entries  # nothing more ran
        row = b_store.lease(SCHEDULER)
        assert row is not None and row.owner_host == "host-b" and row.token == "b" * 32
        assert not a.tick().leader
    finally:
        a_store.close()
        b_store.close()


def test_a_heartbeat_that_cannot_reach_the_store_counts_the_lease_lost_in_time(
    backend: Backend,
) -> None:
    """A holder cut off from the store cannot learn that another replica took over; by its
    own clock it counts the lease lost once the lease time has passed since its last
    renewal, so it stops before the others could take over."""
    store = backend.open(create=True)
    held = try_acquire(store, SCHEDULER, now=utcnow(), ttl=1)
    assert held is not None
    bad = "postgresql://custody@127.0.0.1:1/none" if backend.kind == "postgresql" else None

    def unreachable() -> Store:
        if bad is not None:
            return open_store(bad)  # a closed port: StorageError
        return open_store(backend.home / "missing" / "c.db")  # no such store: StorageError

    beat = Heartbeat(unreachable, lambda st, now: renew(st, held, now), ttl=1, clock=utcnow)
    try:
        with beat:
            beat.check()  # fresh: held
            time.sleep(1.3)
            assert beat.lost and beat.renewals == 0
            with pytest.raises(LeaseLost):
                beat.check()
        ok = Heartbeat(backend.open, lambda st, now: renew(st, held, now), ttl=2, clock=utcnow)
        with ok:
            time.sleep(1.6)
            ok.check()  # a reachable store: renewed, still held
            assert ok.renewals >= 2
    finally:
        store.close()

"""The scheduler: run the periodic jobs on exactly one replica at a time.

Every replica runs :class:`Scheduler`; each :meth:`Scheduler.tick` renews (or tries to
take) the leader lease of :mod:`custody.leader` and, only while this replica holds it,
runs each job whose period has passed. A job is *claimed* before it runs, in one store
transaction that both renews the lease by its token (the fence: a replica whose lease was
taken over cannot claim) and records the job as started; so a replica that lost the lease
runs nothing more, and a job never runs twice in one period, even when its run outlasts
the lease and another replica takes over meanwhile. Each run is audited (intent, then
ok or failed) and its outcome is recorded in the store, where :func:`status` reads it; a
job that fails is recorded and the next job still runs.

While a job runs, a :class:`~custody.leader.Heartbeat` (given *reopen*, its own store
connection) renews the lease every ``ttl / 3`` seconds, so a job longer than the lease
time does not hand the leadership over while it still works. Each job is given a
:class:`Fence`, and calls :meth:`Fence.check` before each of its effects (each re-key
batch, each secret rotated, the checkpoint signed). The check renews the lease by its
token in the store and raises :class:`~custody.leader.LeaseLost` once the lease is gone,
so a holder that lost its lease stops before its next effect. The outcome of a run is
recorded only over the holder's own claim, never over a newer claim by the replica that
took over.

The jobs themselves (key rotation, secret rotation, checkpoint export, expiry warnings)
are built by :mod:`ceremonies.schedule_jobs`; this module only decides who runs what when.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from custody.clock import iso, parse
from custody.errors import CustodyError
from custody.leader import SCHEDULER, Heartbeat, Held, LeaseLost, release, renew, try_acquire
from custody.store.port import Store

META = "schedule:job:"
DEFAULT_PERIOD = 3600
DEFAULT_LEASE = 15

#: A function that runs *body* inside the audit log as ``op`` on ``target`` (intent first).
Audited = Callable[[str, str, Mapping[str, object], Callable[[], int]], int]


class Fence:
    """What a running job calls before each effect: :meth:`check` raises
    :class:`~custody.leader.LeaseLost` once this replica no longer holds the scheduler lease.

    Each check renews the lease by its token in the store (one short transaction on the
    scheduler's own connection), after the heartbeat, when there is one, has not already
    seen the lease lost.
    """

    def __init__(
        self,
        store: Store,
        held: Held,
        clock: Callable[[], datetime],
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self._store, self._held, self._clock, self.heartbeat = store, held, clock, heartbeat
        self.checks = 0

    def __repr__(self) -> str:
        return f"Fence({self._held!r})"

    def check(self) -> None:
        self.checks += 1
        if self.heartbeat is not None:
            self.heartbeat.check()
        if not renew(self._store, self._held, self._clock()):
            raise LeaseLost(
                "This replica lost the scheduler lease",
                "Another replica leads now; this job stopped before its next step.",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One periodic job: ``run(fence)`` does the work and returns a short summary (no
    secrets), calling ``fence.check()`` before each of its effects."""

    name: str
    run: Callable[[Fence], Mapping[str, Any]] = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRun:
    """The record of a job's last run, as kept in the store."""

    job: str
    replica: str
    started: str
    finished: str | None = None
    outcome: str = "running"  # running | ok | failed
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "replica": self.replica,
            "started": self.started,
            "finished": self.finished,
            "outcome": self.outcome,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> JobRun:
        return cls(
            job=str(doc["job"]),
            replica=str(doc["replica"]),
            started=str(doc["started"]),
            finished=None if doc.get("finished") is None else str(doc["finished"]),
            outcome=str(doc.get("outcome", "running")),
            detail=str(doc.get("detail", "")),
        )


def _exact(t: datetime) -> str:
    """*t* to the microsecond: a job's period may be shorter than a second in tests."""
    return t.astimezone(UTC).isoformat()


def last_run(store: Store, job: str) -> JobRun | None:
    raw = store.get_meta(META + job)
    return None if raw is None else JobRun.from_json(json.loads(raw))


def _put(store: Store, r: JobRun) -> None:
    store.set_meta(META + r.job, json.dumps(r.to_json(), sort_keys=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class TickReport:
    leader: bool
    ran: tuple[JobRun, ...] = ()
    stepped_down: bool = False


def replica_name(host: str | None = None) -> str:
    return f"{host or socket.gethostname()}:{os.getpid()}"


class Scheduler:
    """Run *jobs* on whichever replica holds the scheduler lease.

    Args:
        store: this replica's own store connection (for the lease and the records).
        jobs: the jobs, run in this order on each tick.
        audited: runs a job's body inside the audit log (``custody.audit.scope.run_audited``
            bound to the home).
        clock: the time source (UTC datetimes).
        period: seconds between two runs of the same job.
        ttl: the lease time in seconds; a dead leader is replaced within it.
        host: the replica's host name as recorded in the lease (default: this machine's).
        reopen: opens another connection to the store, for the heartbeat that renews the
            lease while a job runs (without it, the lease is renewed only at each fence
            check and between jobs).
    """

    def __init__(
        self,
        store: Store,
        jobs: tuple[Job, ...],
        *,
        audited: Audited,
        clock: Callable[[], datetime],
        period: float = DEFAULT_PERIOD,
        ttl: int = DEFAULT_LEASE,
        host: str | None = None,
        reopen: Callable[[], Store] | None = None,
    ) -> None:
        if ttl < 1 or period <= 0:
            raise ValueError("ttl must be >= 1 and period > 0")
        self.store = store
        self.jobs = jobs
        self.audited = audited
        self.clock = clock
        self.period = period
        self.ttl = ttl
        self.host = host
        self.replica = replica_name(host)
        self.reopen = reopen
        self.held: Held | None = None
        self.lost_in_job = False  # the last job's heartbeat saw the lease lost

    def _lead(self) -> tuple[bool, bool]:
        """Renew or take the lease; (leading, stepped_down)."""
        now = self.clock()
        stepped = False
        if self.held is not None and not renew(self.store, self.held, now):
            self.held, stepped = None, True
        if self.held is None:
            self.held = try_acquire(self.store, SCHEDULER, now=now, ttl=self.ttl, host=self.host)
        return self.held is not None, stepped

    def _claim(self, job: Job) -> JobRun | bool | None:
        """In one transaction: renew the lease by its token (False: lost, step down), then
        record *job* as started if its period has passed (None: not due)."""
        if self.held is None:
            return False
        now = self.clock()
        with self.store.transaction():
            expires = iso(now + timedelta(seconds=self.ttl))
            if not self.store.renew_lease(SCHEDULER, self.held.token, expires=expires):
                return False
            last = last_run(self.store, job.name)
            if last is not None and parse(last.started) + timedelta(seconds=self.period) > now:
                return None
            run = JobRun(job=job.name, replica=self.replica, started=_exact(now))
            _put(self.store, run)
        return run

    def _heartbeat(self, held: Held) -> Heartbeat | None:
        if self.reopen is None:
            return None
        return Heartbeat(
            self.reopen,
            lambda st, now: renew(st, held, now),
            ttl=self.ttl,
            clock=self.clock,
            what="scheduler lease",
        )

    def _run(self, job: Job, run: JobRun, held: Held) -> JobRun:
        summary: dict[str, Any] = {}
        beat = self._heartbeat(held)
        fence = Fence(self.store, held, self.clock, beat)

        def body() -> int:
            summary.update(job.run(fence))
            return 0 if summary.get("ok", True) else 1

        try:
            if beat is not None:
                beat.start()
            rc = self.audited("schedule.run", job.name, {"replica": self.replica}, body)
            outcome, detail = ("ok" if rc == 0 else "failed"), str(summary.get("detail", ""))
        except CustodyError as err:
            outcome, detail = "failed", err.title
        except Exception as exc:  # noqa: BLE001 -- one job's bug must not stop the others
            outcome, detail = "failed", type(exc).__name__
        finally:
            if beat is not None:
                beat.stop()
        self.lost_in_job = beat is not None and beat.lost
        done = JobRun(
            job=job.name,
            replica=self.replica,
            started=run.started,
            finished=_exact(self.clock()),
            outcome=outcome,
            detail=detail[:200],
        )
        with self.store.transaction():
            mine = last_run(self.store, job.name)
            # only over our own claim: a replica that took over may have claimed it again
            if mine is not None and mine.started == run.started and mine.replica == self.replica:
                _put(self.store, done)
        return done

    def tick(self) -> TickReport:
        """One round: lead or stand by; as the leader, run every job that is due."""
        leading, stepped = self._lead()
        if not leading:
            return TickReport(leader=False, stepped_down=stepped)
        ran: list[JobRun] = []
        for job in self.jobs:
            claim = self._claim(job)
            if claim is False:  # taken over: run nothing more
                self.held = None
                return TickReport(leader=False, ran=tuple(ran), stepped_down=True)
            if isinstance(claim, JobRun):
                if self.held is not None:  # _claim just renewed it
                    ran.append(self._run(job, claim, self.held))
                if self.lost_in_job:  # the heartbeat saw the lease go: step down now
                    self.held = None
                    return TickReport(leader=False, ran=tuple(ran), stepped_down=True)
        return TickReport(leader=True, ran=tuple(ran), stepped_down=stepped)

    def run(
        self, stop: threading.Event, *, on_tick: Callable[[TickReport], None] | None = None
    ) -> None:
        """Tick until *stop* is set (at least every ``ttl / 3`` s); release the lease at the end."""
        interval = min(self.period, self.ttl / 3)
        try:
            while not stop.is_set():
                rep = self.tick()
                if on_tick is not None:
                    on_tick(rep)
                stop.wait(interval)
        finally:
            self.close()

    def close(self) -> None:
        if self.held is not None:
            release(self.store, self.held)
            self.held = None


def status(store: Store, jobs: tuple[str, ...], now: datetime) -> dict[str, Any]:
    """The leader (who holds the lease, until when) and each job's last run."""
    row = store.lease(SCHEDULER)
    leader = None
    if row is not None:
        leader = {
            "host": row.owner_host,
            "pid": row.owner_pid,
            "acquired": row.acquired,
            "expires": row.expires,
            "expired": parse(row.expires) <= now,
        }
    runs = {}
    for name in jobs:
        r = last_run(store, name)
        runs[name] = None if r is None else r.to_json()
    return {"now": iso(now), "leader": leader, "jobs": runs}


__all__ = ["Fence", "Job", "JobRun", "Scheduler", "TickReport", "last_run", "status"]

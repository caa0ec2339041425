"""The re-key screen's services: KEK versions and their retirement, re-key jobs, the plan
and the audited run of ``custody rekey run``, and cancelling a scheduled destruction.

A run opens its own deployment in the worker thread with the PIN it is handed; the PIN
is an argument, never kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tui.services.common import _date
from tui.services.status import RotationRow


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionRow:
    """One KEK version and its retirement stage."""

    branch: str
    version: int
    state: str
    objects: int
    created: str
    destroy_after: str = ""
    hold: bool = False

    @property
    def name(self) -> str:
        return f"{self.branch}/v{self.version}"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobView:
    """A re-key job as recorded in the store (updated every batch)."""

    id: int
    branch: str
    to_version: int
    state: str
    done: int
    total: int
    started: str
    updated: str
    finished: str = ""
    verified: int | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RekeyView:
    versions: tuple[VersionRow, ...]
    jobs: tuple[JobView, ...]
    policy: tuple[RotationRow, ...]
    pending: tuple[tuple[str, int, int], ...]  # (branch, version, objects)
    lease: str = ""  # "pid 123 on host until ..." while a job runs


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanView:
    """What a job would do: the content of the confirmation dialog."""

    branch: str | None
    items: tuple[tuple[str, int, int | None, int], ...]  # (branch, from, to, objects)
    rotate: tuple[str, ...]
    total: int
    rate: float
    eta_seconds: float
    # what the run's retirement step then does, named: ("root/v1", "destroy scheduled")
    retire: tuple[tuple[str, str], ...] = ()
    destroy_delay_days: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunView:
    status: str  # done | nothing-to-do | busy
    moved: int
    lines: tuple[str, ...]


def _job_view(j: Any) -> JobView:
    return JobView(
        id=j.id,
        branch=j.branch,
        to_version=j.to_version,
        state=j.state,
        done=j.done,
        total=j.total,
        started=j.started,
        updated=j.updated,
        finished=j.finished or "",
        verified=j.verified,
    )


def _due_rows(items: Sequence[Any]) -> tuple[RotationRow, ...]:
    return tuple(
        RotationRow(
            key=f"{d.key}/v{d.version}" if d.version is not None else f"{d.key}/-",
            key_class=d.key_class,
            period_days=d.period_days,
            last_rotation=_date(d.created.isoformat()) if d.created else "never",
            due=_date(d.due_at.isoformat()) if d.due_at else "now",
            days_left=d.days_left if d.days_left is not None else 0,
            status=d.status,
        )
        for d in items
    )


def rekey_view(home_root: Path, now: datetime) -> RekeyView:
    """Versions, jobs, lease and policy due dates (no PIN needed).

    Raises:
        ConfigError: no deployment. StorageError: the store cannot be read.
    """
    from custody import policy
    from custody.config import Home
    from custody.deployment import open_deployment
    from custody.rekey import retire as rekey_retire
    from custody.rekey import status as rekey_status

    with open_deployment(Home(home_root)) as dep:
        h, cfg = dep.hierarchy, dep.config
        st = rekey_status.status(h, cfg, now=now)
        due = policy.evaluate(rekey_retire.key_ages(h, cfg), cfg.branches, now)
        jobs = tuple(_job_view(j) for j in rekey_status.jobs(dep.store))
        held = rekey_retire.holds(dep.store)
        roots = tuple(  # retired roots too: their destruction can be cancelled here
            VersionRow(
                branch="root",
                version=r.version,
                state=r.state.value,
                objects=0,
                created=r.created or "",
                destroy_after=r.destroy_after or "",
                hold=("root", r.version) in held,
            )
            for r in h.roots()
        )
    lease = st["lease"]
    return RekeyView(
        versions=tuple(
            VersionRow(
                branch=v["branch"],
                version=v["version"],
                state=v["state"],
                objects=v["objects"],
                created=v["created"] or "",
                destroy_after=v["destroy_after"] or "",
                hold=bool(v["hold"]),
            )
            for v in st["versions"]
        )
        + roots,
        jobs=jobs,
        policy=_due_rows(due),
        pending=tuple((p["branch"], p["version"], p["objects"]) for p in st["pending"]),
        lease=f"pid {lease['pid']} on {lease['host']} to {str(lease['expires'])[11:16]}Z"
        if lease
        else "",
    )


def rekey_jobs(home_root: Path) -> tuple[JobView, ...]:
    """The recent jobs only (cheap; polled for live progress of another process's job)."""
    from custody.config import Home
    from custody.deployment import open_deployment
    from custody.rekey import status as rekey_status

    with open_deployment(Home(home_root)) as dep:
        return tuple(_job_view(j) for j in rekey_status.jobs(dep.store))


def rekey_plan(home_root: Path, now: datetime, branch: str | None, due: bool = False) -> PlanView:
    """What ``rekey run`` would move, and an estimate (no PIN needed).

    Raises:
        UsageError: unknown branch. ConfigError, StorageError.
    """
    from custody.config import Home
    from custody.deployment import open_deployment
    from custody.rekey import jobs as rekey

    with open_deployment(Home(home_root)) as dep:
        p = rekey.plan(dep.hierarchy, dep.config, now=now, branch=branch, due=due)
        moved = {(i.branch, i.from_version) for i in p.items}
        retire = retirement_preview(dep.hierarchy, now=now, branch=branch, emptied=moved)
        delay = dep.config.destroy_delay_days
    return PlanView(
        retire=retire,
        destroy_delay_days=delay,
        branch=branch,
        items=tuple((i.branch, i.from_version, i.to_version, i.objects) for i in p.items),
        rotate=p.rotate,
        total=p.total,
        rate=p.rate,
        eta_seconds=p.eta_seconds,
    )


def retirement_preview(
    hierarchy: Any, *, now: datetime, branch: str | None, emptied: set[tuple[str, int]]
) -> tuple[tuple[str, str], ...]:
    """What :func:`custody.rekey.retire.advance_retirement` would do after the job, without
    doing it (the same rules, read only): each version it would disable, schedule for
    destruction or destroy. *emptied*: the versions the job moves everything off."""
    from custody.clock import parse
    from custody.model import KeyState
    from custody.rekey import retire as rekey_retire

    held = rekey_retire.holds(hierarchy.store)
    out: list[tuple[str, str]] = []
    for k in hierarchy.keks(branch):
        key, state = (k.branch, k.version), k.state
        empty = (k.objects == 0 or key in emptied) and not rekey_retire.backup_users(hierarchy, k)
        if state is KeyState.DECRYPT_ONLY and empty:
            state = KeyState.DISABLED
            if key in held:
                out.append((f"{k.branch}/v{k.version}", "disabled (held: not scheduled)"))
        if state is KeyState.DISABLED and key not in held:
            out.append((f"{k.branch}/v{k.version}", "destroy scheduled"))
        elif (
            state is KeyState.DESTROY_SCHEDULED
            and k.destroy_after is not None
            and parse(k.destroy_after) <= now
            and key not in held
        ):
            out.append((f"{k.branch}/v{k.version}", "destroyed now"))
    if branch is None or branch == "root":
        for r in hierarchy.roots():
            if ("root", r.version) in held:
                continue
            if r.state is KeyState.DISABLED:
                out.append((f"root/v{r.version}", "destroy scheduled"))
            elif (
                r.state is KeyState.DESTROY_SCHEDULED
                and r.destroy_after is not None
                and parse(r.destroy_after) <= now
            ):
                out.append((f"root/v{r.version}", "destroyed now (with the token)"))
    return tuple(out)


def rekey_run(
    home_root: Path,
    pin: str,
    branch: str | None,
    due: bool,
    batch: int,
    progress: Callable[[int], None],
) -> RunView:
    """Run (or resume) re-key jobs with this thread's own deployment, audited like the CLI.

    Raises:
        AuditError: the intent could not be logged (nothing done). HsmError, PolicyError,
        IntegrityError, StorageError, UsageError: from :func:`custody.rekey.jobs.run`.
    """
    from custody.audit.log import AuditLog
    from custody.audit.scope import actor_name, warning_sink
    from custody.config import Home
    from custody.deployment import open_deployment
    from custody.rekey import jobs as rekey

    home = Home(home_root)
    details: dict[str, object] = {"batch": batch, "via": "tui"}
    if branch:
        details["branch"] = branch
    if due:
        details["due"] = True
    actor = actor_name()

    with (
        AuditLog.for_home(home) as log,
        log.guard("rekey run", branch or home.root.name, actor, details=details),
        open_deployment(home, pin) as dep,
    ):
        rep = rekey.run(
            dep.hierarchy,
            dep.config,
            branch=branch,
            due=due,
            batch=batch,
            progress=progress,
            audit=warning_sink(home),
        )
    lines = [f"rotated: {r} is now current" for r in rep.rotated]
    lines += [
        f"{j.branch}: moved {j.moved} objects to v{j.to_version} ({j.rate:,.0f}/s); "
        f"verified {j.verified}"
        for j in rep.jobs
    ]
    lines += [f"retirement: {s}" for s in rep.retired]
    if rep.status == "busy" and rep.holder:
        lines.append(f"another job (pid {rep.holder.pid} on {rep.holder.host}) holds the lease")
    return RunView(status=rep.status, moved=sum(j.moved for j in rep.jobs), lines=tuple(lines))


def cancel_destroy(home_root: Path, branch: str, version: int, now: datetime) -> str:
    """Cancel a scheduled destruction (back to disabled, with a hold). Audited.

    Raises:
        UsageError: no such version. PolicyError: not destroy-scheduled. AuditError.
    """
    from custody.audit.log import AuditLog
    from custody.audit.scope import actor_name
    from custody.config import Home
    from custody.deployment import open_deployment
    from custody.rekey import retire as rekey_retire

    home = Home(home_root)
    with (
        AuditLog.for_home(home) as log,
        log.guard(
            "rekey cancel-destroy",
            branch,
            actor_name(),
            details={"branch": branch, "version": version, "via": "tui"},
        ),
        open_deployment(home) as dep,
    ):
        k = rekey_retire.cancel_destroy(
            dep.hierarchy, branch, version, now=now, reason="cancelled in custody tui"
        )
    return f"{branch}/v{version} is {k.state.value}; held"

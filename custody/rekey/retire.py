"""Staged retirement of KEK versions, and the re-key status the CLI and the TUI show.

Stages (:class:`custody.model.KeyState`): ``active`` -> ``decrypt-only`` (as soon as a newer
version is current; :meth:`KeyHierarchy.create_kek_version` does it) -> ``disabled`` (only
when the version wraps nothing, checked inside the transaction that disables it) ->
``destroy-scheduled`` (``destroy_after = now + config.destroy_delay_days``; cancellable,
which puts a *hold* on the version) -> ``destroyed`` (after the delay; the sealed KEK bytes
are erased from the store). Each step is its own transaction, so a crash between steps
leaves a valid state that the next run continues from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from custody import policy
from custody.config import Config
from custody.errors import CeremonyError, PolicyError, UsageError
from custody.keys.hierarchy import KekVersion, KeyHierarchy, RootVersion, iso
from custody.model import BRANCHES, KeyState
from custody.store.sqlite import Store


def key_ages(hierarchy: KeyHierarchy, config: Config) -> list[policy.KeyAge]:
    """The current version and birth of each configured branch and of the root key."""
    ages = []
    active = {k.branch: k for k in hierarchy.keks() if k.state is KeyState.ACTIVE}
    for b in sorted(set(config.branches) | set(BRANCHES)):
        if b == "root":
            continue
        k = active.get(b)
        ages.append(
            policy.KeyAge(
                key=b,
                version=k.version if k else None,
                created=policy.parse_time(k.created) if k else None,
            )
        )
    try:
        r = hierarchy.current_root()
        ages.append(
            policy.KeyAge(key="root", version=r.version, created=policy.parse_time(r.created))
        )
    except CeremonyError:
        ages.append(policy.KeyAge(key="root", version=None, created=None))
    return ages


def holds(store: Store) -> set[tuple[str, int]]:
    """Versions whose automatic retirement was cancelled."""
    return {(r[0], int(r[1])) for r in store.query("SELECT branch, version FROM retire_holds")}


def advance_retirement(
    hierarchy: KeyHierarchy, config: Config, *, now: datetime, branch: str | None = None
) -> list[str]:
    """Move every non-active version as far along the stages as the rules allow at *now*.

    Versions that still wrap something stay decrypt-only; held versions stay disabled.

    Returns:
        Human-readable steps taken, e.g. ``"data/v1: disabled"``.

    Raises:
        StorageError: the store failed (steps already committed stay committed).
    """
    held = holds(hierarchy.store)
    steps: list[str] = []
    for k in hierarchy.keks(branch):
        key = (k.branch, k.version)
        if k.state is KeyState.DECRYPT_ONLY and k.objects == 0 and not _backup_users(hierarchy, k):
            try:
                hierarchy.set_kek_state(k.branch, k.version, KeyState.DISABLED, now=now)
            except PolicyError:
                continue  # something was wrapped under it meanwhile; the rule held
            steps.append(f"{k.branch}/v{k.version}: disabled")
            k = _reload(hierarchy, k)
        if k.state is KeyState.DISABLED and key not in held:
            after = now + timedelta(days=config.destroy_delay_days)
            hierarchy.set_kek_state(
                k.branch, k.version, KeyState.DESTROY_SCHEDULED, destroy_after=after, now=now
            )
            steps.append(f"{k.branch}/v{k.version}: destroy scheduled after {iso(after)}")
            k = _reload(hierarchy, k)
        if (
            k.state is KeyState.DESTROY_SCHEDULED
            and k.destroy_after is not None
            and policy.parse_time(k.destroy_after) <= now
            and key not in held
        ):
            hierarchy.set_kek_state(k.branch, k.version, KeyState.DESTROYED, now=now)
            steps.append(f"{k.branch}/v{k.version}: destroyed")
    if branch is None or branch == "root":
        steps += _advance_roots(hierarchy, config, now=now, held=held)
    return steps


def _advance_roots(
    hierarchy: KeyHierarchy, config: Config, *, now: datetime, held: set[tuple[str, int]]
) -> list[str]:
    """Retired root versions: disabled -> destroy-scheduled -> destroyed (token key deleted,
    blob erased). Ceremonies disable a root once no KEK is wrapped under it; destruction
    needs the HSM, so without it a due root simply waits for the next run with the PIN."""
    steps: list[str] = []
    for r in hierarchy.roots():
        key = ("root", r.version)
        if key in held:
            continue
        if r.state is KeyState.DISABLED:
            after = now + timedelta(days=config.destroy_delay_days)
            hierarchy.set_root_state(
                r.version, KeyState.DESTROY_SCHEDULED, destroy_after=iso(after)
            )
            steps.append(f"root/v{r.version}: destroy scheduled after {iso(after)}")
        elif (
            r.state is KeyState.DESTROY_SCHEDULED
            and r.destroy_after is not None
            and policy.parse_time(r.destroy_after) <= now
            and hierarchy.has_hsm
        ):
            hierarchy.set_root_state(r.version, KeyState.DESTROYED)
            steps.append(f"root/v{r.version}: destroyed")
    return steps


def _backup_users(hierarchy: KeyHierarchy, k: KekVersion) -> int:
    if k.branch != "backup":
        return 0
    (n,) = hierarchy.store.query("SELECT COUNT(*) FROM backups WHERE kek_version=?", (k.version,))[
        0
    ]
    return int(n)


def _reload(hierarchy: KeyHierarchy, k: KekVersion) -> KekVersion:
    return next(x for x in hierarchy.keks(k.branch) if x.version == k.version)


def cancel_destroy(
    hierarchy: KeyHierarchy,
    branch: str,
    version: int,
    *,
    now: datetime,
    reason: str = "cancelled by operator",
) -> KekVersion | RootVersion:
    """Cancel a scheduled destruction: back to ``disabled``, with a hold so no run re-schedules it.

    *branch* is a KEK branch, or ``"root"`` for a retired root version.

    Raises:
        UsageError: no such version. PolicyError: it is not destroy-scheduled.
    """
    if branch == "root":
        rs = [r for r in hierarchy.roots() if r.version == version]
        if not rs:
            raise UsageError(f"No root/v{version}", "See 'custody status'.")
        if rs[0].state is not KeyState.DESTROY_SCHEDULED:
            raise PolicyError(
                f"root/v{version} is {rs[0].state}, not destroy-scheduled",
                "Only a scheduled destruction can be cancelled.",
            )
        with hierarchy.store.tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO retire_holds(branch, version, reason, created) "
                "VALUES(?,?,?,?)",
                ("root", version, reason, iso(now)),
            )
        hierarchy.set_root_state(version, KeyState.DISABLED)
        return next(r for r in hierarchy.roots() if r.version == version)
    ks = [k for k in hierarchy.keks(branch) if k.version == version]
    if not ks:
        raise UsageError(f"No KEK {branch}/v{version}", "See 'custody rekey status'.")
    if ks[0].state is not KeyState.DESTROY_SCHEDULED:
        raise PolicyError(
            f"KEK {branch}/v{version} is {ks[0].state}, not destroy-scheduled",
            "Only a scheduled destruction can be cancelled.",
        )
    with hierarchy.store.tx() as c:
        c.execute(
            "INSERT OR REPLACE INTO retire_holds(branch, version, reason, created) VALUES(?,?,?,?)",
            (branch, version, reason, iso(now)),
        )
    return hierarchy.set_kek_state(branch, version, KeyState.DISABLED, now=now)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRow:
    """A re-key job as recorded in the store (the TUI polls these for live progress)."""

    id: int
    branch: str
    to_version: int
    state: str
    total: int
    done: int
    batch: int
    owner_pid: int | None
    started: str
    updated: str
    finished: str | None
    verified: int | None
    verify_failed: int | None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__} | {"fraction": self.fraction}


def jobs(store: Store, limit: int = 20) -> list[JobRow]:
    """The most recent re-key jobs, newest first."""
    rows = store.query(
        "SELECT id, branch, to_version, state, total, done, batch, owner_pid, started, updated, "
        "finished, verified, verify_failed FROM rekey_jobs ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    return [
        JobRow(
            id=r[0],
            branch=r[1],
            to_version=r[2],
            state=r[3],
            total=r[4],
            done=r[5],
            batch=r[6],
            owner_pid=r[7],
            started=r[8],
            updated=r[9],
            finished=r[10],
            verified=r[11],
            verify_failed=r[12],
        )
        for r in rows
    ]


def status(hierarchy: KeyHierarchy, config: Config, *, now: datetime) -> dict[str, Any]:
    """Everything a re-key screen shows, as plain JSON-ready data (no PIN needed).

    Returns:
        ``{"versions": [...], "jobs": [...], "lease": {...} | None, "policy": [...],
        "pending": [...]}``.
    """
    from custody.rekey import jobs as rekey
    from custody.rekey import lease as rekey_lease

    held = holds(hierarchy.store)
    versions = []
    for k in hierarchy.keks():
        users = k.objects + _backup_users(hierarchy, k)
        versions.append(
            {
                "branch": k.branch,
                "version": k.version,
                "state": k.state.value,
                "kcv": k.kcv,
                "objects": users,
                "created": k.created,
                "state_changed": k.state_changed,
                "destroy_after": k.destroy_after,
                "hold": (k.branch, k.version) in held,
            }
        )
    h = rekey_lease.holder(hierarchy.store)
    lease = None
    if h is not None and policy.parse_time(h.expires) > now:
        lease = {"pid": h.pid, "host": h.host, "acquired": h.acquired, "expires": h.expires}
    due = policy.evaluate(key_ages(hierarchy, config), config.branches, now)
    return {
        "versions": versions,
        "jobs": [j.to_json() for j in jobs(hierarchy.store)],
        "lease": lease,
        "policy": [d.to_json() for d in due],
        "pending": [
            {"branch": b, "version": v, "objects": n} for b, v, n in rekey.pending(hierarchy.store)
        ],
    }

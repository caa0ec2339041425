"""The re-key screen's read model: versions, recent jobs, the lease, policy and pending work.

Everything here is read-only and needs no PIN; the CLI (``custody rekey status``) and the
TUI's re-key screen show it. It sits above :mod:`custody.rekey.jobs` and
:mod:`custody.rekey.retire`, so neither of those imports the other's reader.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from custody import policy
from custody.clock import parse
from custody.config import Config
from custody.keys.hierarchy import KeyHierarchy
from custody.rekey import lease as rekey_lease
from custody.rekey.retire import backup_users, holds, key_ages
from custody.store.port import Store
from custody.store.rows import JobRow

__all__ = ["JobRow", "jobs", "status"]


def jobs(store: Store, limit: int = 20) -> list[JobRow]:
    """The most recent re-key jobs, newest first."""
    return store.recent_jobs(limit)


def status(hierarchy: KeyHierarchy, config: Config, *, now: datetime) -> dict[str, Any]:
    """Everything a re-key screen shows, as plain JSON-ready data (no PIN needed).

    Returns:
        ``{"versions": [...], "jobs": [...], "lease": {...} | None, "policy": [...],
        "pending": [...]}``.
    """
    held = holds(hierarchy.store)
    versions = []
    for k in hierarchy.keks():
        users = k.objects + backup_users(hierarchy, k)
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
    if h is not None and parse(h.expires) > now:
        lease = {"pid": h.pid, "host": h.host, "acquired": h.acquired, "expires": h.expires}
    due = policy.evaluate(key_ages(hierarchy, config), config.branches, now)
    return {
        "versions": versions,
        "jobs": [j.to_json() for j in jobs(hierarchy.store)],
        "lease": lease,
        "policy": [d.to_json() for d in due],
        "pending": [
            {"branch": b, "version": v, "objects": n}
            for b, v, n in hierarchy.store.pending_versions()
        ],
    }

"""Planning a re-key run: what it would move, what it would rotate first, how long it takes.

Needs no PIN (nothing is decrypted); ``custody rekey plan`` and the TUI's re-key screen show
it before a run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custody import policy
from custody.config import Config
from custody.errors import UsageError
from custody.keys import wrapped as envelope
from custody.keys.hierarchy import KeyHierarchy
from custody.model import BRANCHES
from custody.rekey.retire import key_ages
from custody.store.port import Store
from custody.store.rows import ObjectMove


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanItem:
    """Objects under one old version that a job would move."""

    branch: str
    from_version: int
    to_version: int | None
    objects: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RekeyPlan:
    """What ``rekey run`` would do, and how long it should take."""

    items: tuple[PlanItem, ...]
    rotate: tuple[str, ...]
    rate: float
    due: tuple[policy.DueItem, ...]

    @property
    def total(self) -> int:
        return sum(i.objects for i in self.items)

    @property
    def eta_seconds(self) -> float:
        return self.total / self.rate if self.rate > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "items": [vars_of(i) for i in self.items],
            "rotate": list(self.rotate),
            "total": self.total,
            "rate_per_s": round(self.rate),
            "eta_seconds": round(self.eta_seconds, 1),
            "due": [d.to_json() for d in self.due],
        }


def vars_of(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__slots__}


def pending(store: Store, branch: str | None = None) -> list[tuple[str, int, int]]:
    """``(branch, version, objects)`` for every non-active version that still wraps objects."""
    return [(p.branch, p.version, p.objects) for p in store.pending_versions(branch)]


def measure_rate(store: Store, n: int = 2000) -> float:
    """Measure objects/s of the rewrap pipeline on real rows, changing nothing.

    Reads up to *n* real rows, decrypts and re-encrypts same-sized envelopes under throwaway
    keys, writes the updates, then rolls the transaction back.
    """
    k = AESGCM(os.urandom(32))
    rows: list[Any] = list(store.sample_ciphers(n))
    if not rows:
        rows = [
            (0, os.urandom(16), envelope.seal(os.urandom(32), "data", 1, os.urandom(32), b"x"), 1)
        ] * 200
    sample = [(i, u, k.encrypt(b"\0" * 12, bytes(len(w) - 34), b"h" + u), v) for i, u, w, v in rows]
    t0 = time.perf_counter()
    with store.rehearsal():  # real writes, always rolled back
        store.sample_ciphers(n)
        out = [
            ObjectMove(
                k.encrypt(b"\1" * 12, k.decrypt(b"\0" * 12, w, b"h" + u), b"h" + u), v, "", i, v
            )
            for i, u, w, v in sample
        ]
        store.move_objects(out)
    dt = time.perf_counter() - t0
    return len(sample) / dt if dt > 0 else 0.0


def plan(
    hierarchy: KeyHierarchy,
    config: Config,
    *,
    now: datetime,
    branch: str | None = None,
    due: bool = False,
) -> RekeyPlan:
    """What a run would move, which branches it would rotate first, and an estimate.

    Needs no PIN: nothing is decrypted.

    Raises:
        UsageError: unknown branch. StorageError: the store cannot be read.
    """
    if branch is not None and branch not in BRANCHES:
        raise UsageError(f"Unknown KEK branch {branch!r}", f"Use one of: {', '.join(BRANCHES)}.")
    items_due = policy.evaluate(key_ages(hierarchy, config), config.branches, now)
    rotate = branches_to_rotate(items_due, branch) if due else ()
    active = hierarchy.store.active_kek_versions()
    items: list[PlanItem] = []
    for b, v, n in pending(hierarchy.store, branch):
        items.append(PlanItem(branch=b, from_version=v, to_version=active.get(b), objects=n))
    for b in rotate:  # everything under the current version moves after rotation
        cur = active.get(b)
        n = hierarchy.store.count_objects(b, cur) if cur is not None else 0
        if n:
            items.append(
                PlanItem(
                    branch=b, from_version=int(cur or 0), to_version=(cur or 0) + 1, objects=int(n)
                )
            )
    return RekeyPlan(
        items=tuple(items), rotate=rotate, rate=measure_rate(hierarchy.store), due=items_due
    )


def branches_to_rotate(items: tuple[policy.DueItem, ...], branch: str | None) -> tuple[str, ...]:
    return tuple(
        sorted(
            i.key
            for i in items
            if i.key in BRANCHES
            and i.status in ("due", "overdue")
            and (branch is None or i.key == branch)
        )
    )

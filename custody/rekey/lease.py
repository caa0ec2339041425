"""The re-key lease: at most one re-key worker per store, ever.

A single row in ``rekey_lease`` names the owner (a random token, pid and host) and an
expiry. A worker acquires it in a write transaction and renews it inside *every* batch
transaction (:func:`renew`), which fails if the token is no longer the owner's. SQLite
serialises write transactions, so even a worker that stalls past its expiry and loses the
lease cannot commit another batch: two workers never touch the same object.

A lease whose owner is a dead process on this host is taken over at once (a SIGKILLed run is
resumed without waiting for the expiry); a live owner's lease only after it expires.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from custody.clock import iso
from custody.leader import LeaseLost as LeaseLost  # re-exported: the re-key code raises it
from custody.leader import claim
from custody.store.port import Store

LEASE_NAME = "rekey"
LEASE_SECONDS = 120


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """Who holds the lease (no secrets: the token is not shown)."""

    pid: int
    host: str
    acquired: str
    expires: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A held lease. ``token`` identifies this worker; it is not a secret but is not shown."""

    token: str
    pid: int
    host: str
    ttl: int

    def __repr__(self) -> str:
        return f"Lease(pid={self.pid}, host={self.host!r})"


def holder(store: Store) -> Holder | None:
    """The current lease holder, if any (it may have expired)."""
    row = store.lease(LEASE_NAME)
    if row is None:
        return None
    return Holder(
        pid=row.owner_pid, host=row.owner_host, acquired=row.acquired, expires=row.expires
    )


def try_acquire(
    store: Store,
    *,
    now: datetime,
    ttl: int = LEASE_SECONDS,
    pid: int | None = None,
    host: str | None = None,
) -> Lease | Holder:
    """Take the lease if it is free, expired, held by a dead process on this host, or by
    this very process (:func:`custody.leader.claim`).

    Returns:
        The new :class:`Lease`, or the live :class:`Holder` that keeps it.

    Raises:
        StorageError: the store cannot be written.
    """
    row, won = claim(store, LEASE_NAME, now=now, ttl=ttl, pid=pid, host=host, own_pid_retakes=True)
    if not won:
        return Holder(
            pid=row.owner_pid, host=row.owner_host, acquired=row.acquired, expires=row.expires
        )
    return Lease(token=row.token, pid=row.owner_pid, host=row.owner_host, ttl=ttl)


def acquire(
    store: Store,
    *,
    clock: Callable[[], datetime],
    wait: float = 0.0,
    ttl: int = LEASE_SECONDS,
    poll: float = 0.25,
) -> Lease | Holder:
    """Like :func:`try_acquire`, retrying for up to *wait* seconds while another worker holds it.

    Returns:
        The :class:`Lease`, or the :class:`Holder` that still had it when the wait ran out.

    Raises:
        StorageError: the store cannot be written.
    """
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        got = try_acquire(store, now=clock(), ttl=ttl)
        if isinstance(got, Lease) or time.monotonic() >= deadline:
            return got
        time.sleep(poll)


def renew(store: Store, lease: Lease, now: datetime) -> None:
    """Extend the lease; call inside each batch's write transaction.

    Raises:
        LeaseLost: another worker took the lease over (the caller's transaction must roll
            back, which the exception does inside :meth:`Store.transaction`).
    """
    if not store.renew_lease(
        LEASE_NAME, lease.token, expires=iso(now + timedelta(seconds=lease.ttl))
    ):
        raise LeaseLost(
            "This re-key worker lost its lease",
            "Another worker took over after it stalled; this batch was not applied.",
        )


def release(store: Store, lease: Lease) -> None:
    """Give the lease up (only if still ours)."""
    store.drop_lease(LEASE_NAME, lease.token)

"""A leader lease in the store, so that schedulers run on exactly one replica at a time.

Modelled on OpenBao's HA lock: every replica runs :class:`Leader`; the one that holds the
named lease row is the active one and runs the scheduled work, the others stand by and
try again every ``ttl / 3`` seconds. The leader renews the lease every ``ttl / 3``; a
renewal that fails (the lease expired and another replica took it) makes it step down at
once, before it runs anything more. A leader that dies (SIGKILL, a lost host) stops
renewing, and another replica takes over once the lease has expired, within ``ttl``
(sooner on the same host, where a dead owner pid is seen at once).

The lease is a row of the store's lease table (``rekey_lease``, by name; the re-key job's
own lease is the row ``rekey``): acquiring reads and writes it inside one
:meth:`~custody.store.port.StoreCore.transaction`, which holds the store's write lock on
both adapters, so two replicas never both win. Work that must never run twice also takes
its own guard (``custody rekey run`` its re-key lease); the leader lease decides who *tries*.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from custody.clock import iso, parse
from custody.errors import CustodyError, StorageError
from custody.store.port import Store
from custody.store.rows import LeaseRow

SCHEDULER = "scheduler"
DEFAULT_TTL = 15


class LeaseLost(StorageError):
    """This holder no longer holds its lease (it expired and may have been taken over)."""


@dataclass(frozen=True, slots=True)
class Held:
    """This replica's hold on the lease (the token is not shown)."""

    name: str
    token: str
    ttl: int

    def __repr__(self) -> str:
        return f"Held({self.name!r}, ttl={self.ttl})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(
    store: Store,
    name: str,
    *,
    now: datetime,
    ttl: int,
    pid: int | None = None,
    host: str | None = None,
    own_pid_retakes: bool = False,
) -> tuple[LeaseRow, bool]:
    """Take the lease row *name* if it is free, expired, or held by a dead process on this
    host (with *own_pid_retakes*, also one this very process holds), in one store
    transaction. The one take-over rule of every named lease (the scheduler's, and the
    re-key job's in :mod:`custody.rekey.lease`).

    Returns:
        (the new row, True), or (the live holder's row, False).

    Raises:
        StorageError: the store cannot be written.
    """
    pid = os.getpid() if pid is None else pid
    host = socket.gethostname() if host is None else host
    with store.transaction():
        row = store.lease(name)
        if row is not None:
            expired = parse(row.expires) <= now
            dead = row.owner_host == host and not _pid_alive(row.owner_pid)
            mine = own_pid_retakes and row.owner_pid == pid
            if not expired and not dead and not mine:
                return row, False
        row = LeaseRow(
            name=name,
            token=secrets.token_hex(16),
            owner_pid=pid,
            owner_host=host,
            acquired=iso(now),
            expires=iso(now + timedelta(seconds=ttl)),
        )
        store.put_lease(row)
    return row, True


def try_acquire(
    store: Store,
    name: str,
    *,
    now: datetime,
    ttl: int = DEFAULT_TTL,
    pid: int | None = None,
    host: str | None = None,
) -> Held | None:
    """Take the lease *name* if it is free, expired, or held by a dead process on this
    host; None while another live replica holds it.

    Raises:
        StorageError: the store cannot be written.
    """
    row, won = claim(store, name, now=now, ttl=ttl, pid=pid, host=host)
    return Held(name=name, token=row.token, ttl=ttl) if won else None


def renew(store: Store, held: Held, now: datetime) -> bool:
    """Extend the lease; False when it was taken over (then this replica must step down)."""
    with store.transaction():
        return store.renew_lease(
            held.name, held.token, expires=iso(now + timedelta(seconds=held.ttl))
        )


def release(store: Store, held: Held) -> None:
    store.drop_lease(held.name, held.token)


class Leader:
    """Run *work* on whichever replica holds the lease *name*.

    Args:
        store: this replica's store connection (one per thread: give the leader its own).
        work: called about every *every* seconds while this replica leads.
        clock: the time source (UTC datetimes).
        on_change: called with True when this replica becomes the leader, False when it
            steps down.
        host: the replica's host name as recorded in the lease (default: this machine's).
    """

    def __init__(
        self,
        store: Store,
        work: Callable[[], None],
        *,
        clock: Callable[[], datetime],
        name: str = SCHEDULER,
        ttl: int = DEFAULT_TTL,
        every: float = 1.0,
        on_change: Callable[[bool], None] | None = None,
        host: str | None = None,
    ) -> None:
        self.store = store
        self.work = work
        self.clock = clock
        self.name = name
        self.ttl = ttl
        self.every = every
        self.on_change = on_change
        self.host = host  # None: this machine's name
        self.held: Held | None = None

    def step(self) -> bool:
        """One round: renew or try to take the lease, then run the work if leading.
        Returns whether this replica leads."""
        now = self.clock()
        if self.held is not None and not renew(self.store, self.held, now):
            self.held = None  # taken over: step down before doing anything more
            if self.on_change:
                self.on_change(False)
        if self.held is None:
            self.held = try_acquire(self.store, self.name, now=now, ttl=self.ttl, host=self.host)
            if self.held is not None and self.on_change:
                self.on_change(True)
        if self.held is not None:
            self.work()
        return self.held is not None

    def run(self, stop: threading.Event) -> None:
        """Loop until *stop* is set; give the lease up on the way out."""
        interval = min(self.every, self.ttl / 3)
        try:
            while not stop.is_set():
                self.step()
                stop.wait(interval)
        finally:
            if self.held is not None:
                release(self.store, self.held)
                self.held = None


class Heartbeat:
    """Renew a held lease from a thread (and a store connection) of its own while the holder
    works, and tell the holder at once when the lease is gone.

    A long job (a re-key round, a scheduled rotation) would otherwise outlive its lease and
    let another replica take over while it still works. The heartbeat renews every
    ``ttl / 3`` seconds by the lease token. It counts the lease lost when a renewal is
    refused (another holder took it), and also, by this process's own monotonic clock, once
    the lease time has passed since the last renewal that succeeded (less a second, since
    the store keeps expiries to the second): the store cannot be reached, so another
    replica may be about to take over. The lease is then never renewed
    again, and :meth:`check` raises :class:`LeaseLost`. The holder calls it before each
    effect. This is the fence: a holder that lost its lease stops before its next effect.

    Args:
        reopen: opens the heartbeat's own store connection (in its thread; SQLite
            connections belong to the thread that opened them).
        renew: ``renew(store, now)`` extends the lease by its token, inside a transaction;
            False when the token is no longer the owner's.
        ttl: the lease time in seconds.
        clock: the time source for the new expiry (UTC datetimes).
        what: names the lease in the error (``scheduler lease``, ``re-key lease``).
    """

    def __init__(
        self,
        reopen: Callable[[], Store],
        renew: Callable[[Store, datetime], bool],
        *,
        ttl: float,
        clock: Callable[[], datetime],
        what: str = "lease",
    ) -> None:
        self._reopen, self._renew, self.ttl, self.clock, self.what = reopen, renew, ttl, clock, what
        self.every = ttl / 3
        # how long a renewal is trusted here: the store keeps expiries to the second (up to
        # 1 s less than ttl), so count a little less than ttl from the moment it was sent
        self._trust = max(ttl - 1.0, ttl / 2)
        self._until = time.monotonic() + self._trust
        self._lost = threading.Event()
        self._stop = threading.Event()
        self.renewals = 0
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Heartbeat({self.what!r}, ttl={self.ttl}, lost={self.lost})"

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(
            target=self._loop, name=f"heartbeat-{self.what}", daemon=True
        )
        self._thread.start()
        return self

    def _loop(self) -> None:
        store: Store | None = None
        try:
            while not self._stop.wait(self.every) and not self._lost.is_set():
                ok: bool | None = None
                sent = time.monotonic()
                try:
                    if store is None:
                        store = self._reopen()
                        sent = time.monotonic()  # the renewal counts from here, not the connect
                    ok = self._renew(store, self.clock())
                except CustodyError:
                    ok = None  # the store is unreachable: retry until the lease runs out
                    if store is not None:
                        with contextlib.suppress(Exception):
                            store.close()
                    store = None
                if ok:
                    self._until = sent + self._trust
                    self.renewals += 1
                elif ok is False or time.monotonic() >= self._until:
                    self._lost.set()
        finally:
            if store is not None:
                with contextlib.suppress(Exception):
                    store.close()

    @property
    def lost(self) -> bool:
        if not self._lost.is_set() and time.monotonic() >= self._until:
            self._lost.set()
        return self._lost.is_set()

    def check(self) -> None:
        """Raise unless the lease is still held (call before each effect).

        Raises:
            LeaseLost: a renewal was refused, or none succeeded within the lease time.
        """
        if self.lost:
            raise LeaseLost(
                f"This process lost its {self.what}",
                "Another replica may hold it now; nothing more was done. The work resumes "
                "on whichever replica holds the lease.",
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.ttl))

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

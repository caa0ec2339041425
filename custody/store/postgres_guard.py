"""Lockout state of ``custody serve`` shared by every replica of one PostgreSQL store
(:class:`PostgresLockout`; the tables ``guard_fails`` and ``guard_locks`` of the tenth
migration, ``MIGRATIONS[9]``).

``HOME/guard.db`` (:class:`custody.store.sqlite_guard.GuardDb`) is one file per host: two
``custody serve`` on two hosts over one PostgreSQL store would each allow the full number
of failed authentications. With a PostgreSQL store the failures and lockouts are kept in the
store instead, so the count is the same across every replica: the lockout engages after
``lockout_after`` failures *in total* within the window, and exactly one replica's
:meth:`PostgresLockout.fail` returns True for it (the caller audits it: one ``api lockout``
entry per lockout, whichever replica saw the last failure).

Each failure is one transaction that takes a per-client advisory lock (not the store's
write lock: a token spray must not stall the deployment's writes), so the count and the
decision are atomic across replicas. Times are Unix seconds from each replica's clock: keep
the replicas' clocks in step (NTP); a skew of *s* seconds shifts a lockout's end by *s*.

The connection is this object's own (autocommit; one per server process), thread-safe
behind a lock. It holds client addresses, never a token.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import psycopg

from custody.store.postgres_base import connect, describe, storage_error

GUARD_LOCK_CLASS = 0x67756172  # "guar": the high half of the per-client advisory lock key


def _lock_key(client: str) -> int:
    """A signed 64-bit advisory lock key for *client* (its own namespace)."""
    low = int.from_bytes(hashlib.sha256(client.encode()).digest()[:4], "big")
    return ((GUARD_LOCK_CLASS << 32) | low) - (1 << 63)


class PostgresLockout:
    """Failed authentications and lockouts per client address, in the shared store.

    Raises (every method): StorageError when the store cannot be reached or written.
    """

    def __init__(self, url: str, *, password_file: Path | None = None) -> None:
        self.url = url
        self._password_file = password_file
        self._where = describe(url)
        self._conn: Any = connect(url, password_file=password_file, prompt=False)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PostgresLockout({self._where!r})"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _live(self) -> Any:
        if self._conn.closed or self._conn.broken:  # between requests: connect again
            self._conn = connect(self.url, password_file=self._password_file, prompt=False)
        return self._conn

    def locked_until(self, client: str, now: float) -> float | None:
        """When *client*'s lockout ends, or None when it is not locked out."""
        try:
            with self._lock:
                row = (
                    self._live()
                    .execute("SELECT until FROM guard_locks WHERE client=%s", (client,))
                    .fetchone()
                )
        except psycopg.Error as exc:
            raise storage_error(self._where, exc) from exc
        if row is None or float(row[0]) <= now:
            return None
        return float(row[0])

    def fail(self, client: str, now: float, *, window: float, after: int, seconds: float) -> bool:
        """Count one failed authentication of *client* across every replica. When it is the
        *after*-th within *window* seconds, lock *client* out for *seconds* and forget its
        failures. Returns True when this failure engaged the lockout (on one replica only).
        """
        try:
            with self._lock:
                conn = self._live()
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(client),))
                    conn.execute(
                        "DELETE FROM guard_fails WHERE client=%s AND at<=%s",
                        (client, now - window),
                    )
                    conn.execute(
                        "INSERT INTO guard_fails (client, at) VALUES (%s, %s)", (client, now)
                    )
                    (n,) = conn.execute(
                        "SELECT COUNT(*) FROM guard_fails WHERE client=%s", (client,)
                    ).fetchone()
                    engaged = int(n) >= after
                    if engaged:
                        conn.execute(
                            "INSERT INTO guard_locks (client, until) VALUES (%s, %s) "
                            "ON CONFLICT (client) DO UPDATE SET until=excluded.until",
                            (client, now + seconds),
                        )
                        conn.execute("DELETE FROM guard_fails WHERE client=%s", (client,))
                    conn.execute("DELETE FROM guard_locks WHERE until<=%s", (now,))
        except psycopg.Error as exc:
            raise storage_error(self._where, exc) from exc
        return engaged


__all__ = ["PostgresLockout"]

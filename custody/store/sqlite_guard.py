"""Lockout and rate-limit state shared by the processes of one ``custody serve``
(``HOME/guard.db``, :class:`GuardDb`).

Failed authentications per client address, the lockouts they engage, and the rate-limit
windows per principal live in one small SQLite file beside the store, so that every server
process on the host counts them together: an attacker who spreads tokens over several
processes is locked out at the same count as against one. Each change is one ``BEGIN
IMMEDIATE`` transaction (the count and the decision are atomic across processes).

It is not ``custody.db``: counters change on the request path and need no durability
(``synchronous=OFF``: a crash at worst forgets recent failures, as a restart of a
single-process server did), and keeping them out of the store keeps its durable commits and
its migration list for the deployment's records. The file is 0600; it holds client
addresses and principal names, never a token.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from custody.store.sqlite_base import storage_error

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS fails (client TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS fails_client ON fails (client, at)",
    "CREATE TABLE IF NOT EXISTS locks (client TEXT PRIMARY KEY, until REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rate (name TEXT NOT NULL, win INTEGER NOT NULL, "
    "used INTEGER NOT NULL, PRIMARY KEY (name, win))",
)


class GuardDb:
    """The shared guard state (thread-safe: one connection behind a lock).

    Raises (every method): StorageError when the file cannot be read or written.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")
            for stmt in _SCHEMA:
                self._db.execute(stmt)
        except (sqlite3.Error, OSError) as exc:
            raise storage_error(path, exc) from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def locked_until(self, client: str, now: float) -> float | None:
        """When *client*'s lockout ends, or None when it is not locked out."""
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT until FROM locks WHERE client=?", (client,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc
        if row is None or row[0] <= now:
            return None
        return float(row[0])

    def fail(self, client: str, now: float, *, window: float, after: int, seconds: float) -> bool:
        """Count one failed authentication of *client*. When it is the *after*-th within
        *window* seconds, lock *client* out for *seconds* and forget its failures. Returns
        True when this failure engaged the lockout."""
        try:
            with self._lock:
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute("DELETE FROM fails WHERE client=? AND at<=?", (client, now - window))
                    db.execute("INSERT INTO fails (client, at) VALUES (?, ?)", (client, now))
                    (n,) = db.execute(
                        "SELECT COUNT(*) FROM fails WHERE client=?", (client,)
                    ).fetchone()
                    engaged = n >= after
                    if engaged:
                        db.execute(
                            "INSERT INTO locks (client, until) VALUES (?, ?) ON CONFLICT "
                            "(client) DO UPDATE SET until=excluded.until",
                            (client, now + seconds),
                        )
                        db.execute("DELETE FROM fails WHERE client=?", (client,))
                    db.execute("DELETE FROM locks WHERE until<=?", (now,))
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc
        return bool(engaged)

    def lease(self, name: str, win: int, want: int, limit: int) -> int:
        """Take up to *want* of the *limit* requests of *name*'s rate window *win* (an
        integer window number); returns how many were granted (0 when it is spent)."""
        try:
            with self._lock:
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    row = db.execute(
                        "SELECT used FROM rate WHERE name=? AND win=?", (name, win)
                    ).fetchone()
                    used = 0 if row is None else int(row[0])
                    got = max(0, min(want, limit - used))
                    if got:
                        db.execute(
                            "INSERT INTO rate (name, win, used) VALUES (?, ?, ?) ON CONFLICT "
                            "(name, win) DO UPDATE SET used=used+excluded.used",
                            (name, win, got),
                        )
                    if row is None:  # a new window: drop the spent ones
                        db.execute("DELETE FROM rate WHERE win<?", (win - 1,))
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc
        return got


__all__ = ["GuardDb"]

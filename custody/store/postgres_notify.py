"""LISTEN/NOTIFY for the access-control rows on PostgreSQL: several replicas, one store.

Every write of an access-control table (principals, grants, release rules, MFA
enrolments, access requests and approvals) made through the adapter also runs
``pg_notify('custody_access', <table>)`` in the same transaction
(:func:`notify_if_access`). PostgreSQL delivers the notification to every listening
connection when, and only when, that transaction commits.

:class:`AccessWatch` is a replica's listener. It runs a thread with its own connection,
``LISTEN custody_access``, and calls ``on_change(table)`` for each notification. When the
connection is lost it calls ``on_change("*")``, because notifications may have been
missed, and keeps doing so after each failed reconnect, until it listens again. A cache
dropped on ``on_change`` is therefore never kept across a gap in the notifications.

This is a prompt to drop caches, not a security boundary. Whoever writes the database
directly (the operator with the disk) sends no notification. So nothing may trust the
*absence* of a notification: the access seal still digests the rows at every decision,
and a row changed behind custody's back is caught by that digest, notified or not.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

CHANNEL = "custody_access"
ACCESS_TABLES = (
    "principals",
    "grants",
    "release_rules",
    "mfa_enrolments",
    "access_requests",
    "access_approvals",
    "releases",
)
_WRITE = re.compile(
    r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(" + "|".join(ACCESS_TABLES) + r")\b",
    re.IGNORECASE,
)
log = logging.getLogger("custody.store.notify")


def access_table(sql: str) -> str | None:
    """The access-control table *sql* writes, if it writes one."""
    m = _WRITE.match(sql)
    return m.group(1).lower() if m else None


def notify_if_access(conn: Any, sql: str) -> None:
    """Inside the caller's open transaction: notify the listeners if *sql* writes an
    access-control table (delivered when that transaction commits)."""
    table = access_table(sql)
    if table is not None:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, table))


class AccessWatch:
    """Listen for access-control changes made by any replica (see the module docstring).

    Args:
        connect: opens a new autocommit connection to the store's database.
        on_change: called on the watch thread with the table changed, or ``"*"`` when
            notifications may have been missed.
    """

    def __init__(self, connect: Callable[[], Any], on_change: Callable[[str], None]) -> None:
        self._connect, self._on_change = connect, on_change
        self._stop = threading.Event()
        self.listening = threading.Event()
        self.received = 0
        self._conn: Any = None
        self._thread = threading.Thread(target=self._loop, name="custody-access-watch", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"AccessWatch(listening={self.listening.is_set()})"

    def _call(self, table: str) -> None:
        try:
            self._on_change(table)
        except Exception as exc:  # noqa: BLE001 -- a callback's bug must not stop the watch
            log.warning("access watch callback failed (%s)", type(exc).__name__)

    def _loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._conn = self._connect()
                self._conn.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                self._call("*")  # anything may have changed before we listened
                backoff = 0.2
                while not self._stop.is_set():
                    for n in self._conn.notifies(timeout=0.5):
                        self.received += 1
                        self._call(str(n.payload) or "*")
            except Exception as exc:  # noqa: BLE001 -- the driver's error, a StorageError, OSError
                if self._stop.is_set():
                    break
                self.listening.clear()
                self._call("*")  # a gap: notifications may have been missed
                log.warning("access watch lost its connection (%s); retrying", type(exc).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.listening.clear()
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        self._conn.close()
                    self._conn = None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


__all__ = ["ACCESS_TABLES", "CHANNEL", "AccessWatch", "access_table", "notify_if_access"]

"""SQLite adapter: parallel re-key batches (:class:`custody.store.port.WorkerStore`).

SQLite has one writer at a time, so a batch transaction is an ordinary ``BEGIN IMMEDIATE``
transaction: workers serialise their writes and overlap only their rewrapping. Holding the
write lock is also what keeps a takeover of the lease out until the batch ends.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from custody.store.sqlite_base import SqliteBase


class SqliteWorkers(SqliteBase):
    def batch_transaction(self) -> AbstractContextManager[None]:
        return self.transaction()

    def lease_holds(self, name: str, token: str, *, now: str) -> bool:
        self._require_transaction("A lease check")
        return (
            self._one(
                "SELECT 1 FROM rekey_lease WHERE name=? AND token=? AND expires>?",
                (name, token, now),
            )
            is not None
        )

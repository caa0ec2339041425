"""PostgreSQL adapter: parallel re-key batches (:class:`custody.store.port.WorkerStore`).

A batch transaction runs without the store's write lock
(:meth:`custody.store.postgres_base.PostgresBase.batch_transaction`); its rows are claimed
with ``FOR UPDATE SKIP LOCKED``. The lease check takes a ``FOR SHARE`` lock on the lease
row: any number of batches hold it at once, while a takeover's ``UPDATE`` waits for them to
commit, after which every batch of the old owner finds the token changed and stops.
"""

from __future__ import annotations

from custody.store.postgres_base import PostgresBase


class PostgresWorkers(PostgresBase):
    def lease_holds(self, name: str, token: str, *, now: str) -> bool:
        self._require_transaction("A lease check")
        return (
            self._one(
                "SELECT 1 FROM rekey_lease WHERE name=%s AND token=%s AND expires>%s FOR SHARE",
                (name, token, now),
            )
            is not None
        )

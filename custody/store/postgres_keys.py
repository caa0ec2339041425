"""PostgreSQL adapter: root versions, KEK versions and wrapped objects (:class:`KeyStore`):
the shared statements of :mod:`custody.store.keys_sql`, and PostgreSQL's own re-key batch
(row locks, a binary ``COPY``)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from custody.store.keys_sql import KeyQueries, move_rounds
from custody.store.postgres_base import PostgresBase
from custody.store.rows import ObjectCipher, ObjectMove

_CLAIM = (
    "SELECT id, uid, wrapped FROM objects WHERE branch=%s AND kek_version=%s ORDER BY id LIMIT %s"
)


class PostgresKeys(PostgresBase, KeyQueries):
    """The key hierarchy's tables on PostgreSQL."""

    def claim_objects(self, branch: str, kek_version: int, limit: int) -> list[ObjectCipher]:
        # Row locks: the rows are this transaction's until it ends; a concurrent claimer
        # skips them (and takes the next ones) instead of waiting or taking them twice. A
        # transaction that holds the store's write lock needs none: no other claimer or
        # mover of objects runs beside it (batch transactions run only under the lease its
        # own coordinator holds, and every move is guarded by the old version anyway), and
        # locking 10,000 rows writes each of their tuple headers once more.
        self._require_transaction("A batch claim")
        rows = self._rows(
            _CLAIM if self._locked else _CLAIM + " FOR UPDATE SKIP LOCKED",
            (branch, kek_version, limit),
            binary=True,
        )
        return [ObjectCipher(*r) for r in rows]

    def move_objects(self, moves: Sequence[ObjectMove]) -> int:
        # Moves are staged with a binary COPY into a temp table and applied by one
        # UPDATE ... FROM whose RETURNING rows are counted by (branch, kind, old, new) for
        # the counters, in the same statement. Moves of the same id go in successive rounds,
        # so the result is that of applying them one by one.
        moved = 0
        with self.transaction() if not self._depth else contextlib.nullcontext():
            self._run(
                "CREATE TEMP TABLE IF NOT EXISTS object_moves(id BIGINT PRIMARY KEY, "
                "wrapped BYTEA, new_version BIGINT, updated TEXT, old_version BIGINT) "
                "ON COMMIT DELETE ROWS"
            )
            for batch in move_rounds(moves):
                self._run("TRUNCATE pg_temp.object_moves")
                self._copy(
                    "COPY pg_temp.object_moves(wrapped, new_version, updated, id, old_version) "
                    "FROM STDIN (FORMAT BINARY)",
                    batch,
                    types=("bytea", "int8", "text", "int8", "int8"),
                )
                changes = self._rows(
                    "WITH u AS (UPDATE objects SET wrapped=m.wrapped, kek_version=m.new_version, "
                    "updated=m.updated FROM pg_temp.object_moves AS m "
                    "WHERE objects.id = m.id AND objects.kek_version = m.old_version "
                    "RETURNING objects.branch, objects.kind, m.old_version, m.new_version) "
                    "SELECT branch, kind, old_version, new_version, COUNT(*) FROM u "
                    "GROUP BY 1, 2, 3, 4"
                )
                self._bump_tally(
                    [(b, old, k, -c) for b, k, old, new, c in changes if old != new]
                    + [(b, new, k, c) for b, k, old, new, c in changes if old != new]
                )
                moved += sum(int(c[4]) for c in changes)
        return moved

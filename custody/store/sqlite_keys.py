"""SQLite adapter: root versions, KEK versions and wrapped objects (:class:`KeyStore`): the
shared statements of :mod:`custody.store.keys_sql`, and SQLite's own re-key batch."""

from __future__ import annotations

from collections.abc import Sequence

from custody.errors import StorageError
from custody.store.keys_sql import KeyQueries, move_rounds
from custody.store.rows import ObjectCipher, ObjectMove
from custody.store.sqlite_base import SqliteBase


class SqliteKeys(SqliteBase, KeyQueries):
    """The key hierarchy's tables on SQLite."""

    def claim_objects(self, branch: str, kek_version: int, limit: int) -> list[ObjectCipher]:
        # SQLite has no row locks: the claim is exclusive because this transaction holds
        # the database's write lock (BEGIN IMMEDIATE) until it commits or rolls back, so no
        # other claimer can read these rows as claimable before they are moved.
        self._require_transaction("A batch claim")
        rows = self._rows(
            "SELECT id, uid, wrapped FROM objects WHERE branch=? AND kek_version=? "
            "ORDER BY id LIMIT ?",
            (branch, kek_version, limit),
        )
        return [ObjectCipher(*r) for r in rows]

    def move_objects(self, moves: Sequence[ObjectMove]) -> int:
        # Moves are staged in a temp table and applied by one UPDATE ... FROM, whose changes
        # are first counted by (branch, kind, old, new) for the counters. Moves of the same id
        # go in successive rounds, so the result is that of applying them one by one.
        moved = 0
        with self.transaction():
            self._run(
                "CREATE TEMP TABLE IF NOT EXISTS object_moves(id INTEGER PRIMARY KEY, "
                "wrapped BLOB, new_version INTEGER, updated TEXT, old_version INTEGER)"
            )
            for batch in move_rounds(moves):
                self._run("DELETE FROM temp.object_moves")
                self._write_many(
                    "INSERT INTO temp.object_moves(wrapped, new_version, updated, id, "
                    "old_version) VALUES(?,?,?,?,?)",
                    batch,
                )
                changes = self._rows(
                    "SELECT o.branch, o.kind, m.old_version, m.new_version, COUNT(*) "
                    "FROM objects o JOIN temp.object_moves m "
                    "ON o.id = m.id AND o.kek_version = m.old_version GROUP BY 1, 2, 3, 4"
                )
                n = self._write(
                    "UPDATE objects SET wrapped=m.wrapped, kek_version=m.new_version, "
                    "updated=m.updated FROM temp.object_moves AS m "
                    "WHERE objects.id = m.id AND objects.kek_version = m.old_version"
                ).rowcount
                if n != sum(c[4] for c in changes):
                    raise StorageError(
                        "The objects changed while they were being moved", "Retry the batch."
                    )
                self._bump_tally(
                    [(b, old, k, -c) for b, k, old, new, c in changes if old != new]
                    + [(b, new, k, c) for b, k, old, new, c in changes if old != new]
                )
                moved += n
            self._run("DELETE FROM temp.object_moves")
        return moved

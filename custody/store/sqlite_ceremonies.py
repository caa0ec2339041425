"""SQLite adapter: participants, the ceremony registry, share sets, drills, incidents: the
shared statements of :mod:`custody.store.ceremonies_sql`, run through
:class:`~custody.store.sqlite_base.SqliteBase`."""

from __future__ import annotations

from custody.store.ceremonies_sql import CeremonyQueries
from custody.store.sqlite_base import SqliteBase


class SqliteCeremonies(SqliteBase, CeremonyQueries):
    """The ceremony tables on SQLite."""

    SAME_SECOND = "rowid DESC"

    def _columns(self, table: str) -> set[str]:
        if self._one("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)) is None:
            return set()
        # table is one of the fixed names of ceremonies_sql, checked against the catalogue
        return {r[1] for r in self._rows(f"PRAGMA table_info({table})")}

"""PostgreSQL adapter: participants, the ceremony registry, share sets, drills, incidents:
the shared statements of :mod:`custody.store.ceremonies_sql`, run through
:class:`~custody.store.postgres_base.PostgresBase`."""

from __future__ import annotations

from custody.store.ceremonies_sql import CeremonyQueries
from custody.store.postgres_base import PostgresBase


class PostgresCeremonies(PostgresBase, CeremonyQueries):
    """The ceremony tables on PostgreSQL."""

    def _columns(self, table: str) -> set[str]:
        rows = self._rows(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        )
        return {r[0] for r in rows}

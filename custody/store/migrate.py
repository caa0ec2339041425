"""The one migration runner, for every adapter.

:data:`custody.store.sqlite_migrations.MIGRATIONS` is the schema, numbered by position. An
adapter tells the runner which version its store is at and how to apply one step in one
transaction (SQLite runs the DDL as written; PostgreSQL runs it through
:func:`custody.store.postgres_dialect.translate`); the runner decides which steps run, in
which order, and refuses a store newer than this custody.
"""

from __future__ import annotations

from typing import Protocol

from custody.errors import StorageError
from custody.store.sqlite_migrations import MIGRATIONS, SCHEMA_VERSION


class MigrationTarget(Protocol):
    def schema_version(self) -> int:
        """How many migrations the store has run."""
        ...

    def apply_migration(self, n: int, script: str) -> None:
        """Run migration *n* (0-based) and record version ``n + 1``, in one transaction.
        An adapter whose store is shared may find another process ran it first (then it
        does nothing)."""
        ...


def migrate(target: MigrationTarget) -> None:
    """Bring *target* to :data:`SCHEMA_VERSION`.

    Raises:
        StorageError: the store is newer than this custody, or a step failed (rolled back).
    """
    current = target.schema_version()
    if current > SCHEMA_VERSION:
        raise StorageError(
            f"The store schema v{current} is newer than this custody (v{SCHEMA_VERSION})",
            "Upgrade custody.",
        )
    for n in range(current, SCHEMA_VERSION):
        target.apply_migration(n, MIGRATIONS[n])

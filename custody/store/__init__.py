"""The store: a typed port (:mod:`custody.store.port`, rows in :mod:`custody.store.rows`)
and its adapters (SQLite: :mod:`custody.store.sqlite`; the audit log's own database:
:mod:`custody.store.sqlite_audit`; snapshots: :mod:`custody.store.sqlite_backup`, as
``custody.store.backup``). See docs/store.md."""

from __future__ import annotations

from pathlib import Path

from custody.store import sqlite_backup as backup
from custody.store.port import Store
from custody.store.sqlite import SqliteStore


def open_store(location: Path, *, create: bool = False) -> Store:
    """Open a deployment's store at *location* (today: a SQLite file).

    This is the one place that picks an adapter; a PostgreSQL location (``postgresql://``)
    would be dispatched here (docs/store.md).

    Raises:
        StorageError: missing, corrupted, locked or unwritable.
    """
    return SqliteStore.open(Path(location), create=create)


__all__ = ["SqliteStore", "Store", "backup", "open_store"]

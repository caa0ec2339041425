"""The store: a typed port (:mod:`custody.store.port`, rows in :mod:`custody.store.rows`)
and its adapters (SQLite: :mod:`custody.store.sqlite`; the audit log's own database:
:mod:`custody.store.sqlite_audit`; snapshots: :mod:`custody.store.sqlite_backup`, as
``custody.store.backup``). See docs/store.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from custody.store import sqlite_backup as backup
from custody.store.port import Store
from custody.store.postgres_dialect import is_postgres_location
from custody.store.sqlite import SqliteStore


def open_store(
    location: Path | str,
    *,
    create: bool = False,
    local: Path | None = None,
    password_file: Path | None = None,
) -> Store:
    """Open a deployment's store at *location*: a SQLite file, or a ``postgresql://`` URL
    (:class:`custody.store.postgres.PostgresStore`; *local* is a path in the home and
    *password_file* a 0600 password file, docs/store.md).

    This is the one place that picks an adapter.

    Raises:
        ConfigError: a PostgreSQL URL that holds a password, or a bad password file.
        StorageError: missing, corrupted, locked, unreachable or unwritable.
    """
    if is_postgres_location(location):
        from custody.store.postgres import PostgresStore  # psycopg only for such stores

        return PostgresStore.open(
            str(location), create=create, local=local, password_file=password_file
        )
    return SqliteStore.open(Path(location), create=create)


def open_lockout(location: Path | str, *, password_file: Path | None = None) -> Any | None:
    """The lockout state ``custody serve`` shares across replicas of the store at
    *location*: for a PostgreSQL store a :class:`custody.store.postgres_guard.PostgresLockout`
    on a connection of its own; None for a SQLite store (its ``HOME/guard.db`` is already
    shared by the processes of the one host that can open the file).

    Raises:
        ConfigError: a PostgreSQL URL that holds a password, or a bad password file.
        StorageError: unreachable or refused.
    """
    if not is_postgres_location(location):
        return None
    from custody.store.postgres_guard import PostgresLockout  # psycopg only for such stores

    return PostgresLockout(str(location), password_file=password_file)


__all__ = ["SqliteStore", "Store", "backup", "open_lockout", "open_store"]

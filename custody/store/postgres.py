"""The PostgreSQL adapter of the store port: the same tables as the SQLite adapter, on a
server that several custody processes and hosts share.

The schema is the SQLite adapter's numbered migrations
(:data:`custody.store.sqlite_migrations.MIGRATIONS`), translated by
:func:`custody.store.postgres_dialect.translate` and run by the one runner
(:func:`custody.store.migrate.migrate`); ``custody_schema`` records how many ran (SQLite's
``PRAGMA user_version``). A migration runs under a transaction-scoped advisory lock and
re-reads the version inside it, so processes that open a new store at once run each step
exactly once. Every foreign :mod:`psycopg` error is translated into
:class:`~custody.errors.StorageError` (:func:`custody.store.postgres_base.storage_error`).

:class:`PostgresStore` implements :class:`custody.store.port.Store`; the methods live in
:mod:`~custody.store.postgres_keys`, :mod:`~custody.store.postgres_ceremonies`,
:mod:`~custody.store.postgres_secrets`, :mod:`~custody.store.postgres_mfa` and
:mod:`~custody.store.postgres_access`, which run the statements shared with the SQLite
adapter (``custody/store/*_sql.py``; row locks and a binary ``COPY`` for the re-key batch
are their own), and in :mod:`~custody.store.postgres_work` and
:mod:`~custody.store.postgres_workers`, which mirror their SQLite counterparts statement by
statement (``%s`` parameters, ``RETURNING id`` for ``lastrowid``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from custody.errors import StorageError
from custody.store.migrate import migrate
from custody.store.postgres_access import PostgresAccess
from custody.store.postgres_base import Params, connect
from custody.store.postgres_ceremonies import PostgresCeremonies
from custody.store.postgres_dialect import translate
from custody.store.postgres_keys import PostgresKeys
from custody.store.postgres_mfa import PostgresMfa
from custody.store.postgres_notify import AccessWatch
from custody.store.postgres_secrets import PostgresSecrets
from custody.store.postgres_work import PostgresWork
from custody.store.postgres_workers import PostgresWorkers
from custody.store.sqlite_migrations import SCHEMA_VERSION

__all__ = ["PostgresStore"]

_SCHEMA_TABLE = "CREATE TABLE IF NOT EXISTS custody_schema(version BIGINT NOT NULL)"


class PostgresStore(
    PostgresKeys,
    PostgresWork,
    PostgresWorkers,
    PostgresCeremonies,
    PostgresSecrets,
    PostgresAccess,
    PostgresMfa,
):
    """An open PostgreSQL store (one connection; use one per thread or process)."""

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

    @classmethod
    def open(
        cls,
        url: str,
        *,
        create: bool = False,
        local: Path | None = None,
        password_file: Path | None = None,
    ) -> PostgresStore:
        """Connect to (and migrate) the store at *url*.

        Args:
            url: ``postgresql://USER@HOST[:PORT]/DB[?sslmode=...]``, with no password.
            create: allow initialising an empty database; otherwise a database that holds
                no custody schema is an error.
            local: a path in the home (:attr:`path`; its parent holds local state).
            password_file: a 0600 file with the password (see postgres_base).

        Raises:
            ConfigError: a password in the URL, a bad URL or password file.
            StorageError: unreachable, refused, not a custody store, or newer than this.
        """
        conn = connect(url, password_file=password_file)
        store = cls(
            url,
            conn,
            local if local is not None else Path.cwd() / "custody.pg",
            password_file=password_file,
        )
        try:
            if not create and store._schema_version() is None:
                raise StorageError(
                    f"The store {store._where} holds no custody schema",
                    "Run 'custody init' (or 'custody store migrate --to URL') first.",
                )
            migrate(store)
        except BaseException:
            store.close()
            raise
        return store

    # -- migrations (custody.store.migrate) --------------------------------------------
    def _schema_version(self) -> int | None:
        exists = self._scalar("SELECT to_regclass('custody_schema') IS NOT NULL")
        if not exists:
            return None
        v = self._scalar("SELECT version FROM custody_schema")
        return None if v is None else int(v)

    def schema_version(self) -> int:
        return self._schema_version() or 0

    def apply_migration(self, n: int, script: str) -> None:
        stmts = translate(script)
        with self.transaction():  # holds the write lock: one migrator at a time
            self._run(_SCHEMA_TABLE)
            current = self._scalar("SELECT version FROM custody_schema")
            if current is None:
                self._write("INSERT INTO custody_schema(version) VALUES(0)")
                current = 0
            if int(current) != n:
                return  # another process ran it first
            for stmt in stmts:
                self._run(stmt)
            self._write("UPDATE custody_schema SET version=%s", (n + 1,))

    # -- metadata and integrity -------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        v = self._scalar("SELECT value FROM meta WHERE key=%s", (key,))
        return None if v is None else str(v)

    def change_counter(self) -> object | None:
        return None  # no cheap equivalent of SQLite's data_version: callers check each time

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            "INSERT INTO meta(key, value) VALUES(%s, %s) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def check(self) -> None:
        """Check the connection and the schema (PostgreSQL checks its own pages; run
        ``pg_amcheck`` on the server for a full check).

        Raises:
            StorageError: unreachable, or the schema is not this custody's.
        """
        if self._schema_version() != SCHEMA_VERSION:
            raise StorageError(
                f"The store {self._where} is not at schema v{SCHEMA_VERSION}",
                "Open it with this custody to migrate it, or restore it from a backup.",
            )

    def close(self) -> None:
        self.conn.close()

    def watch_access(self, on_change: Callable[[str], None]) -> AccessWatch:
        """Call *on_change* (on a thread of its own, with a connection of its own) whenever
        any replica commits a change to the access-control rows (LISTEN/NOTIFY; see
        :mod:`custody.store.postgres_notify`). Close the returned watch to stop."""
        url, pw = self.url, self._password_file
        return AccessWatch(lambda: connect(url, password_file=pw, prompt=False), on_change)

    # -- raw access (adapter and tests only; not part of the port) --------------------
    def query(self, sql: str, params: Params = ()) -> list[Any]:
        """Run a read query. Tests write raw SQL once for both adapters: ``?`` parameters
        are accepted and become ``%s``.

        Raises:
            StorageError: on any PostgreSQL failure.
        """
        return self._rows(_qmark(sql) if params else sql, params)

    @contextmanager
    def tx(self) -> Iterator[_RawConn]:
        """A raw write transaction (``execute(sql, params)`` with ``?`` parameters), rolled
        back on any error."""
        with self.transaction():
            yield _RawConn(self)


def _qmark(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class _RawConn:
    """The connection of :meth:`PostgresStore.tx`, taking ``?`` parameters as SQLite's."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    def execute(self, sql: str, params: Params = ()) -> Any:
        return self._store._cur(_qmark(sql) if params else sql, params)

"""SQLite side of ``custody store migrate``: the tables of a SQLite database and their
rows in primary-key order, read inside one ``BEGIN IMMEDIATE`` transaction that keeps every
other writer out until the copy has been verified and the config switched
(:mod:`custody.store_migrate`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custody.errors import StorageError
from custody.store.sqlite_base import storage_error


@dataclass(frozen=True, slots=True)
class Table:
    """One table: its columns in order and its primary-key columns."""

    name: str
    columns: tuple[str, ...]
    pk: tuple[str, ...]


class SqliteExport:
    """A SQLite database held for export (its write lock is held until :meth:`close`).

    Raises:
        StorageError: the file is missing, damaged or busy.
    """

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise StorageError(f"{path} does not exist", "There is nothing to migrate.")
        self.path = path
        try:
            self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            self._db.execute("BEGIN IMMEDIATE")  # no writer until we are done
        except sqlite3.Error as exc:
            raise storage_error(path, exc) from exc

    def close(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")  # we only read
        finally:
            self._db.close()

    def tables(self) -> list[Table]:
        """Every table in creation order (so a referenced table comes first)."""
        try:
            names = [
                r[0]
                for r in self._db.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
                )
            ]
            out = []
            for n in names:
                info = self._db.execute(f'PRAGMA table_info("{n}")').fetchall()
                cols = tuple(str(r[1]) for r in info)
                pk = tuple(str(r[1]) for r in sorted(info, key=lambda r: r[5]) if r[5])
                out.append(Table(n, cols, pk or cols))
            return out
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc

    def rows(self, table: Table, chunk: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of *table* in primary-key order, *chunk* at a time."""
        cols = ", ".join(f'"{c}"' for c in table.columns)
        order = ", ".join(f'"{c}"' for c in table.pk)
        try:
            cur = self._db.execute(f'SELECT {cols} FROM "{table.name}" ORDER BY {order}')  # noqa: S608
            while batch := cur.fetchmany(chunk):
                yield [tuple(r) for r in batch]
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc

    def count(self, table: Table) -> int:
        try:
            return int(self._db.execute(f'SELECT COUNT(*) FROM "{table.name}"').fetchone()[0])  # noqa: S608
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc

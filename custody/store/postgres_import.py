"""PostgreSQL side of ``custody store migrate``: upsert rows copied from SQLite, prune rows
the source no longer has, read tables back in primary-key order for the digests, and move
identity sequences past the copied ids (:mod:`custody.store_migrate`).

Table and column names come from the target's own catalogue (``information_schema``);
a name that is not there is refused before any statement is built from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from custody.errors import IntegrityError
from custody.store.postgres import PostgresStore

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _q(name: str) -> str:
    if not _NAME.match(name):
        raise IntegrityError(f"Refusing the table or column name {name[:40]!r}", "")
    return f'"{name}"'


def columns(store: PostgresStore, table: str) -> dict[str, str]:
    """The columns of *table* in the target and their types ({} when it has no such table)."""
    rows = store.query(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
        (table,),
    )
    return {str(r[0]): str(r[1]) for r in rows}


def upsert(
    store: PostgresStore,
    table: str,
    cols: Sequence[str],
    pk: Sequence[str],
    rows: Sequence[Sequence[Any]],
    types: dict[str, str],
) -> None:
    """Insert *rows*, replacing rows with the same primary key, in one transaction."""
    if not rows:
        return
    fix = [i for i, c in enumerate(cols) if types.get(c) == "bytea"]
    if fix:  # SQLite may hold TEXT in a BLOB column: the same bytes as UTF-8
        rows = [
            tuple(v.encode() if i in fix and isinstance(v, str) else v for i, v in enumerate(r))
            for r in rows
        ]
    names = ", ".join(_q(c) for c in cols)
    keys = ", ".join(_q(c) for c in pk)
    rest = [c for c in cols if c not in pk]
    action = (
        "DO UPDATE SET " + ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in rest)
        if rest
        else "DO NOTHING"
    )
    marks = ", ".join(["%s"] * len(cols))
    sql = (
        f"INSERT INTO {_q(table)} ({names}) VALUES ({marks}) "  # noqa: S608 - names checked
        f"ON CONFLICT ({keys}) {action}"
    )
    with store.transaction():
        store._write_many(sql, rows)


def keys(store: PostgresStore, table: str, pk: Sequence[str]) -> set[tuple[Any, ...]]:
    k = ", ".join(_q(c) for c in pk)
    return {tuple(r) for r in store.query(f"SELECT {k} FROM {_q(table)}")}  # noqa: S608


def prune(store: PostgresStore, table: str, pk: Sequence[str], extra: set[tuple[Any, ...]]) -> int:
    """Delete the rows whose primary key is in *extra* (the source no longer has them)."""
    if not extra:
        return 0
    cond = " AND ".join(f"{_q(c)} = %s" for c in pk)
    with store.transaction():
        return store._write_many(f"DELETE FROM {_q(table)} WHERE {cond}", list(extra))  # noqa: S608


def rows(
    store: PostgresStore, table: str, cols: Sequence[str], pk: Sequence[str], chunk: int = 5000
) -> Iterator[list[Any]]:
    names = ", ".join(_q(c) for c in cols)
    order = ", ".join(_q(c) for c in pk)
    yield from store._batches(
        f"SELECT {names} FROM {_q(table)} ORDER BY {order}",  # noqa: S608
        (),
        chunk,
    )


def count(store: PostgresStore, table: str) -> int:
    return int(store.query(f"SELECT COUNT(*) FROM {_q(table)}")[0][0])  # noqa: S608


def reset_identities(store: PostgresStore) -> None:
    """Move every identity sequence past the largest id copied into its column."""
    for table, col in store.query(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_identity = 'YES'"
    ):
        t, c = _q(str(table)), _q(str(col))
        store.query(
            f"SELECT setval(pg_get_serial_sequence('{t}', '{col}'), "  # noqa: S608
            f"COALESCE((SELECT MAX({c}) FROM {t}), 0) + 1, false)"
        )

"""The statement runners that the shared query mixins (``custody/store/*_sql.py``) call.

A topic's statements are written once, in the portable subset of SQL with ``?``
placeholders and no literal ``%``, as a mixin over :class:`Runners`; each adapter puts its
base class first (``class SqliteKeys(SqliteBase, KeyQueries)``), so the base's runners
(:class:`~custody.store.sqlite_base.SqliteBase`,
:class:`~custody.store.postgres_base.PostgresBase`) are the ones that run: they execute
the statements, turn ``?`` into the driver's placeholder, and map the driver's errors to
:class:`~custody.errors.StorageError`. No driver is imported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from custody.errors import StorageError


class Runners:
    """The interface of an adapter base class, as the shared query mixins see it."""

    def _rows(self, sql: str, params: Any = ()) -> list[Any]:
        raise NotImplementedError

    def _one(self, sql: str, params: Any = ()) -> Any:
        raise NotImplementedError

    def _scalar(self, sql: str, params: Any = ()) -> Any:
        raise NotImplementedError

    def _iter(self, sql: str, params: Any = ()) -> Iterator[Any]:
        raise NotImplementedError

    def _batches(self, sql: str, params: Any = (), size: int = 10_000) -> Iterator[list[Any]]:
        raise NotImplementedError

    def _read_snapshot(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _write(self, sql: str, params: Any = ()) -> Any:
        raise NotImplementedError

    def _write_many(self, sql: str, rows: Iterable[Any]) -> int:
        raise NotImplementedError

    def _insert_unique(self, sql: str, params: Any, taken: StorageError) -> None:
        raise NotImplementedError

    def _run(self, sql: str) -> None:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _require_transaction(self, what: str) -> None:
        raise NotImplementedError


__all__ = ["Runners"]

"""SQLite adapter: principals, access requests, approvals, grants and quorum releases
(:class:`custody.store.port.AccessStore`): the shared statements of
:mod:`custody.store.access_sql`, run through :class:`~custody.store.sqlite_base.SqliteBase`."""

from __future__ import annotations

from custody.store.access_sql import AccessQueries
from custody.store.sqlite_base import SqliteBase


class SqliteAccess(SqliteBase, AccessQueries):
    """The access-control tables on SQLite."""

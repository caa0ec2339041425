"""PostgreSQL adapter: principals, access requests, approvals, grants and quorum releases
(:class:`custody.store.port.AccessStore`): the shared statements of
:mod:`custody.store.access_sql`, run through
:class:`~custody.store.postgres_base.PostgresBase` (which maps psycopg's errors)."""

from __future__ import annotations

from custody.store.access_sql import AccessQueries
from custody.store.postgres_base import PostgresBase


class PostgresAccess(PostgresBase, AccessQueries):
    """The access-control tables on PostgreSQL."""

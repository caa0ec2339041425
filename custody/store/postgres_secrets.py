"""PostgreSQL adapter: secrets and their versions (:class:`custody.store.port.SecretStore`):
the shared statements of :mod:`custody.store.secrets_sql`, run through
:class:`~custody.store.postgres_base.PostgresBase` (which maps psycopg's errors)."""

from __future__ import annotations

from custody.store.postgres_base import PostgresBase
from custody.store.secrets_sql import SecretQueries


class PostgresSecrets(PostgresBase, SecretQueries):
    """The ``secrets`` and ``secret_versions`` tables on PostgreSQL."""

"""SQLite adapter: secrets and their versions (:class:`custody.store.port.SecretStore`): the
shared statements of :mod:`custody.store.secrets_sql`, run through
:class:`~custody.store.sqlite_base.SqliteBase`."""

from __future__ import annotations

from custody.store.secrets_sql import SecretQueries
from custody.store.sqlite_base import SqliteBase


class SqliteSecrets(SqliteBase, SecretQueries):
    """The ``secrets`` and ``secret_versions`` tables on SQLite."""

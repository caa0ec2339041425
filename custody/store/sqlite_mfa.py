"""SQLite adapter: TOTP enrolments (:class:`custody.store.port.MfaStore`, docs/mfa.md): the
shared statements of :mod:`custody.store.mfa_sql`, run through
:class:`~custody.store.sqlite_base.SqliteBase`."""

from __future__ import annotations

from custody.store.mfa_sql import MfaQueries
from custody.store.sqlite_base import SqliteBase


class SqliteMfa(SqliteBase, MfaQueries):
    """The ``mfa_enrolments`` table on SQLite."""

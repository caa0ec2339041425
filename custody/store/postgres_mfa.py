"""PostgreSQL adapter: TOTP enrolments (:class:`custody.store.port.MfaStore`, docs/mfa.md):
the shared statements of :mod:`custody.store.mfa_sql`, run through
:class:`~custody.store.postgres_base.PostgresBase`."""

from __future__ import annotations

from custody.store.mfa_sql import MfaQueries
from custody.store.postgres_base import PostgresBase


class PostgresMfa(PostgresBase, MfaQueries):
    """The ``mfa_enrolments`` table on PostgreSQL."""

"""The store tests run against both adapters: ``backend`` (tests/pg_fixtures.py, shared by
every test package) is a SQLite file or a fresh database on the session's throwaway
PostgreSQL server."""

from __future__ import annotations

from tests.pg_fixtures import Backend, RawStore

__all__ = ["Backend", "RawStore"]

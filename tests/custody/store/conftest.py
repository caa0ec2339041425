"""The store tests run against both adapters: ``backend`` is a SQLite file or a fresh
database on the session's throwaway PostgreSQL server (tests/pg_fixtures.py; those cases
carry the ``postgres`` marker)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from custody.store import open_store
from custody.store.postgres import PostgresStore
from custody.store.sqlite import SqliteStore

RawStore = SqliteStore | PostgresStore
"""An adapter with its raw access (``query``, ``tx``) for tests, beside the port."""


@dataclass(frozen=True)
class Backend:
    """Where a test's store lives, and how to open it (again)."""

    kind: str  # "sqlite" | "postgresql"
    location: str  # a file path or a password-less URL
    home: Path

    def open(self, *, create: bool = False) -> RawStore:
        loc: str | Path = self.location if self.kind == "postgresql" else Path(self.location)
        s = open_store(loc, create=create, local=self.home / "custody.db")
        assert isinstance(s, SqliteStore | PostgresStore)
        return s


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "postgresql":
        return Backend("postgresql", request.getfixturevalue("pg_url"), tmp_path)
    return Backend("sqlite", str(tmp_path / "c.db"), tmp_path)

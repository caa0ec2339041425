"""The statements shared by both adapters (custody/store/*_sql.py) at the points where the
two dialects used to differ: the typed errors for a duplicate secret or value, the incident
upsert, the order of ceremonies created in the same second, a drill looked up by epoch and
a destroyed KEK's erased key. Each test runs on SQLite and on the PostgreSQL test server."""

from __future__ import annotations

import pytest

from custody.errors import StorageError
from custody.model import KeyState
from custody.store.rows import (
    CeremonyRow,
    IncidentRow,
    NewKek,
    NewRoot,
    SecretRow,
    SecretVersionRow,
)
from tests.custody.store.conftest import Backend

NOW = "2027-01-15T08:00:00+00:00"


@pytest.fixture
def store(backend: Backend):
    s = backend.open(create=True)
    yield s
    s.close()


def _secret(path: str) -> SecretRow:
    return SecretRow(env="prod", path=path, category="password", security_class="standard",
                     owner="svc", state="active", current_version=1, pending_version=None,
                     previous_version=None, next_version=2, expires=NOW, created=NOW,
                     updated=NOW)  # fmt: skip


def _version(path: str, version: int, lookup: bytes | None) -> SecretVersionRow:
    return SecretVersionRow(env="prod", path=path, version=version, state="current",
                            dek_uid=None, ciphertext=b"c" * 24, value_mac=b"m" * 32,
                            lookup=lookup, source="generated", created=NOW)  # fmt: skip


def test_a_duplicate_secret_or_value_is_the_typed_error_and_changes_nothing(store) -> None:
    with store.transaction():
        store.add_secret(_secret("db/a"))
        store.add_secret_version(_version("db/a", 1, b"L" * 32))
    with (
        pytest.raises(StorageError, match=r"A secret prod:db/a already exists"),
        store.transaction(),
    ):
        store.add_secret(_secret("db/a"))
    # the same API key's lookup under another secret: refused, and the new secret with it
    with (
        pytest.raises(StorageError, match="already holds this value or version") as e,
        store.transaction(),
    ):
        store.add_secret(_secret("db/b"))
        store.add_secret_version(_version("db/b", 1, b"L" * 32))
    assert "API keys are unique" in e.value.hint
    assert [s.path for s in store.secrets("prod")] == ["db/a"]
    assert [v.version for v in store.secret_versions("prod", "db/a")] == [1]


def test_an_incident_put_twice_is_one_row_with_the_last_report(store) -> None:
    store.put_incident(IncidentRow(id="i1", ceremony_id="c1", reason="r1", created=1, report="a"))
    store.put_incident(IncidentRow(id="i1", ceremony_id="c2", reason="r2", created=2, report="b"))
    rows = store.query("SELECT id, ceremony_id, reason, created, report FROM incidents")
    assert [tuple(r) for r in rows] == [("i1", "c2", "r2", 2, "b")]


def test_ceremonies_list_newest_first_also_within_one_second(store) -> None:
    def row(cid: str, created: int, updated: int) -> CeremonyRow:
        return CeremonyRow(id=cid, kind="drill", state="open", coordinator=None, bundle="{}",
                           created=created, expires=created + 60, updated=updated,
                           pending=None)  # fmt: skip

    store.add_ceremony(row("b-first", 20, 20))
    store.add_ceremony(row("a-second", 20, 21))
    store.add_ceremony(row("z-oldest", 10, 10))
    assert [c.id for c in store.ceremonies()] == ["a-second", "b-first", "z-oldest"]
    assert [c.id for c in store.ceremonies(state="open")] == ["a-second", "b-first", "z-oldest"]


def test_last_drill_is_per_epoch(store) -> None:
    assert store.record_drill("d1", ["ann", "bo"], epoch=1, at=100)
    assert not store.record_drill("d1", ["ann"], epoch=1, at=150)  # once per ceremony
    assert store.record_drill("d2", ["ann"], epoch=2, at=200)
    assert store.last_drill("ann", 1) == 100
    assert store.last_drill("ann", 2) == 200
    assert store.last_drill("bo", 2) is None
    assert store.last_drill("ann", None) is None  # every drill names its epoch


def test_a_destroyed_kek_keeps_its_row_but_not_its_key(store) -> None:
    store.add_root(NewRoot(version=1, kcv="aaaaaa", epoch=None, blob=None), activate=True, now=NOW)
    store.add_kek(NewKek(branch="data", version=1, kcv="bbbbbb", root_version=1,
                         wrapped=b"k" * 40), now=NOW)  # fmt: skip
    store.set_kek_state("data", 1, KeyState.DESTROYED, now=NOW, destroy_after=None)
    sealed = store.sealed_kek("data", 1)
    assert sealed is not None
    assert (sealed.state, sealed.wrapped) == (KeyState.DESTROYED, b"")
    assert [(k.version, k.objects) for k in store.keks("data")] == [(1, 0)]
    assert type(store.keks("data")[0].objects) is int
